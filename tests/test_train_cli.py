"""End to end through the real CLI: a short run writes its whole folder and a W&B offline run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

SHORT = ("train.steps=300", "train.eval_every=100", "train.progress=false")


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def bn_run(cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "bn"
    cli("model.bn=before", *SHORT, f"hydra.run.dir={run_dir}", "wandb.mode=offline")
    return run_dir


def test_run_folder_has_config_metrics_and_summary(bn_run: Path) -> None:
    config = yaml.safe_load((bn_run / ".hydra" / "config.yaml").read_text())
    assert config["model"]["bn"] == "before" and config["train"]["steps"] == 300

    rows = _metrics(bn_run)
    assert [int(r["step"]) for r in rows] == [0, 100, 200, 300]
    columns = list(rows[0])
    layers = ["h1", "h2", "h3"]
    assert columns == (["step", "test_acc", "test_loss", "train_loss"]
                       + [f"grad_norm/gamma/{h}" for h in layers] + [f"grad_norm/beta/{h}" for h in layers]
                       + [f"act/{h}/p{p}" for h in layers for p in (15, 50, 85)])
    last = rows[-1]
    assert float(last["test_acc"]) > 0.8  # BN at lr 0.5 is far past chance within 300 steps
    assert all(float(last[f"grad_norm/gamma/{h}"]) > 0 for h in layers)
    assert math.isnan(float(rows[0]["train_loss"])) and float(last["train_loss"]) < 2.3
    p15, p50, p85 = (float(last[f"act/h3/p{p}"]) for p in (15, 50, 85))
    assert p15 < p50 < p85

    summary = json.loads((bn_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == 300
    assert summary["final_test_acc"] == pytest.approx(float(last["test_acc"]))
    assert summary["best_test_acc"] == pytest.approx(max(float(r["test_acc"]) for r in rows))
    assert summary["steps_per_s"] > 0 and summary["versions"]["torch"]


def test_wandb_offline_run_is_written_in_the_run_folder(bn_run: Path) -> None:
    runs = list((bn_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = list(runs[0].glob("run-*.wandb"))
    assert records and records[0].stat().st_size > 1000


def test_same_seed_gives_bit_identical_metrics(cli, bn_run: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    cli("model.bn=before", *SHORT, f"hydra.run.dir={again}", "wandb.mode=disabled")
    assert (again / "metrics.csv").read_text() == (bn_run / "metrics.csv").read_text()


def test_divergence_is_recorded_not_raised(cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "diverge"
    proc = cli("optim.lr=1e6", *SHORT, f"hydra.run.dir={run_dir}", "wandb.mode=disabled")
    assert proc.returncode == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert 1 <= summary["diverged_step"] <= 300 and summary["final_test_acc"] is None


# one bad command line of each kind: range, choice, type, unknown key, group option, missing GPU (every key's
# check is test_config's, in process: the command line reports them all alike)
BAD = [
    ("optim.lr=-0.1", "optim.lr"), ("model.bn=sideways", "model.bn"), ("train.steps=abc", "train.steps"),
    ("+foo=1", "foo"), ("model=resnet", "model/resnet"), ("device=cuda", "device"),
]


@pytest.mark.parametrize("override, key", BAD)
def test_bad_config_is_one_line_and_trains_nothing(cli, tmp_path: Path, override: str, key: str) -> None:
    if override == "device=cuda":
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    run_dir = tmp_path / "bad"
    proc = cli("wandb.mode=disabled", f"hydra.run.dir={run_dir}", override, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in proc.stderr
    assert not (run_dir / "summary.json").exists()


def test_a_bad_value_in_any_job_of_a_sweep_refuses_the_sweep_before_its_first_job_trains(cli, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = cli("-m", "optim.lr=0.1,0.5,-1", "wandb.mode=disabled", f"hydra.sweep.dir={sweep}", *SHORT, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "optim.lr=-1.0" in lines[0] and "the sweep's job optim.lr=-1 " in lines[0]
    assert not [p for p in sweep.iterdir() if p.is_dir()]  # no job folder: the two good jobs did not start


def test_batch_of_one_is_refused_with_bn_only(cli, tmp_path: Path) -> None:
    proc = cli("model.bn=before", "train.batch_size=1", f"hydra.run.dir={tmp_path / 'bn'}", check=False)
    assert proc.returncode == 2 and "train.batch_size=1" in proc.stderr and "batch norm" in proc.stderr
    cli("train.batch_size=1", "train.steps=5", "train.eval_every=5", "train.progress=false",
        "wandb.mode=disabled", f"hydra.run.dir={tmp_path / 'plain'}")


def test_conflicting_hydra_flags_are_one_line(cli) -> None:
    proc = cli("-m", "--cfg", "job", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "invalid command line" in lines[0] and "--cfg" in lines[0]
