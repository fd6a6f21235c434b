"""bnrepro-report on damaged run folders and unusable output folders: it lists what it cannot read and goes on,
or says in one line what is wrong with --out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPORT = [sys.executable, "-m", "bnrepro.report"]


DAMAGE = ["[1, 2]", '"x"', "null", "{not json", "\\xff\\xfe"]  # valid JSON of the wrong shape, and not JSON


@pytest.fixture(scope="module")
def runs(cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    sweep = tmp_path_factory.mktemp("damage") / "sweep"
    cli("-m", "model.bn=none,before", "seed=0,1,2", "train.steps=60", "train.eval_every=30", "train.progress=false",
        "wandb.mode=disabled", f"hydra.sweep.dir={sweep}")
    return sweep


def test_summaries_of_the_wrong_shape_are_each_listed_and_the_report_still_written(runs: Path,
                                                                                   tmp_path: Path) -> None:
    damaged = tmp_path / "sweep"
    shutil.copytree(runs, damaged)
    victims = sorted(damaged.glob("*/summary.json"))[:len(DAMAGE)]  # one kind of damage each, one run intact
    for victim, content in zip(victims, DAMAGE):
        victim.write_bytes(content.encode().decode("unicode_escape").encode("latin-1"))
    out = tmp_path / "report"
    proc = subprocess.run([*REPORT, str(damaged), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = (out / "report.md").read_text()
    for victim in victims:
        assert f"unreadable run: {victim.parent}" in text
    assert "Loaded 1 runs" in text


@pytest.mark.parametrize("kind", ["a file", "read-only"])
def test_an_unusable_out_folder_is_one_line(runs: Path, tmp_path: Path, kind: str) -> None:
    if kind == "read-only" and os.geteuid() == 0:
        pytest.skip("running as root: a read-only folder is still writable")
    out = tmp_path / "out"
    if kind == "a file":
        out.write_text("")
    else:
        out.mkdir()
        out.chmod(0o555)
    proc = subprocess.run([*REPORT, str(runs), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 3 and len(proc.stderr.strip().splitlines()) == 1 and "--out" in proc.stderr
