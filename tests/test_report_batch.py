"""The batch-dependence report sections (bnrepro/report/sections/batch.py) on real tiny sweeps of
experiment=non_iid and experiment=bn_inference, reported together: every table cell and verdict recomputed here from
the runs' own files."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest

from bnrepro.report.claims import VERDICTS
from bnrepro.report.cli import main
from bnrepro.report.stats import difference

TINY = ("train.epochs=0.02", "train.eval_every_epochs=0.01", "tracking.precise_bn_batches=4",
        "tracking.gap_samples=120", "train.progress=false", "hydra.callbacks.sweep_progress.enabled=false")


@pytest.fixture(scope="module")
def report(cli, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The three studies in miniature, reported together: each section must keep to its own study's runs."""
    root = tmp_path_factory.mktemp("batch")
    non_iid, inference, sizes = root / "non_iid", root / "bn_inference", root / "batch_size"
    cli("-m", "experiment=non_iid", "recipe=batch_norm,batch_renorm", "seed=0,1", "model.brn_warmup_steps=0",
        "model.brn_d_max_steps=0", "model.brn_r_max_steps=0", *TINY, f"hydra.sweep.dir={non_iid}", timeout=600)
    cli("-m", "experiment=bn_inference", "train.batch_size=8,60", "model.bn_momentum=0.1,null", "seed=0,1",
        "tracking.batch_stats_eval=false", *TINY, f"hydra.sweep.dir={inference}", timeout=600)
    cli("-m", "experiment=batch_size", "recipe=batch_norm", "train.batch_size=8,60", "seed=0,1",
        "tracking.batch_stats_eval=false", *TINY, f"hydra.sweep.dir={sizes}", timeout=600)
    out = root / "report"
    main([str(non_iid), str(inference), str(sizes), "--out", str(out), "--formats", "png"])
    return non_iid, inference, out


def _runs(sweep: Path) -> list[tuple[dict, list[dict[str, str]]]]:
    """(config as flat key -> value, metrics rows) of every run of the sweep."""
    import yaml

    out = []
    for summary in sorted(sweep.glob("*/summary.json")):
        folder = summary.parent
        cfg = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
        with open(folder / "metrics.csv") as f:
            out.append(({**json.loads(summary.read_text()), "cfg": cfg}, list(csv.DictReader(f))))
    return out


def _table(md: str, heading: str) -> list[dict[str, str]]:
    """The markdown table of the section whose title starts with `heading`."""
    block = md[md.index(f"### {heading}"):].split("\n#")[0]
    lines = [line for line in block.splitlines() if line.startswith("| ")]
    cols = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(cols, (c.strip() for c in line.strip("|").split("|")))) for line in lines[1:]]


def _last(rows: list[dict[str, str]], column: str) -> float:
    return float([r for r in rows if r.get(column)][-1][column])


def test_every_section_is_in_the_report_with_its_figure(report: tuple[Path, Path, Path]) -> None:
    md = (report[2] / "report.md").read_text()
    for heading in ("BN's dependence on the batch size", "Which statistics at inference", "Non-i.i.d. batches"):
        assert f"### {heading}" in md
    for stem in ("batch_size_accuracy", "bn_inference_curves"):  # PNG alone: --formats png
        assert (report[2] / f"{stem}.png").stat().st_size > 0 and not (report[2] / f"{stem}.pdf").exists()
    assert "(in our words)" in md


def test_the_non_iid_table_and_verdicts_are_the_runs_numbers(report: tuple[Path, Path, Path]) -> None:
    non_iid, _, out = report
    md = (out / "report.md").read_text()
    rows = {(r["configuration"], r["batching"]): r for r in _table(md, "Non-i.i.d. batches")}
    finals: dict[tuple[str, str], list[float]] = {}
    for summary, metrics in _runs(non_iid):
        key = (summary["cfg"]["variant"], summary["cfg"]["train"]["batching"])
        finals.setdefault(key, []).append(summary["final_test_acc"])
        assert summary["final_test_acc"] == pytest.approx(_last(metrics, "test_acc"))
    assert set(rows) == set(finals) == {(v, b) for v in ("BN", "BRN") for b in ("iid", "class_clustered")}
    for key, values in finals.items():
        assert float(rows[key]["final mean (%)"]) == pytest.approx(100 * sum(values) / 2, abs=0.005)
        assert rows[key]["n"] == "2"
    # the verdict of "BRN above BN on class-clustered batches" follows from the Welch interval of these runs
    iv = difference(finals[("BRN", "class_clustered")], finals[("BN", "class_clustered")])
    expected = {"above": "reproduced", "below": "not reproduced", "inside": "inconclusive"}[iv.side()]
    line = next(x for x in md.splitlines() if "Tested: BRN ends above BN on class-clustered batches" in x)
    assert f"**{expected}**" in line and iv.points() in line


def test_the_inference_table_has_each_momentum_and_the_precise_minus_ema_interval(
        report: tuple[Path, Path, Path]) -> None:
    _, inference, out = report
    md = (out / "report.md").read_text()
    rows = {(r["batch size"], r["momentum"]): r for r in _table(md, "Which statistics at inference")}
    assert set(rows) == {(b, m) for b in ("8", "60") for m in ("0.1", "null")}
    per: dict[tuple[str, str], tuple[list[float], list[float], list[float]]] = {}
    for summary, metrics in _runs(inference):
        momentum = summary["cfg"]["model"]["bn_momentum"]
        key = (str(summary["cfg"]["train"]["batch_size"]), "null" if momentum is None else f"{momentum:g}")
        ema, precise, gap = per.setdefault(key, ([], [], []))
        ema.append(_last(metrics, "test_acc"))
        precise.append(_last(metrics, "test_acc_precise"))
        gap.append(_last(metrics, "train_eval_gap"))
    for key, (ema, precise, gap) in per.items():
        row = rows[key]
        assert float(row["EMA (%)"]) == pytest.approx(50 * sum(ema), abs=0.005)
        assert float(row["precise (%)"]) == pytest.approx(50 * sum(precise), abs=0.005)
        assert row["precise - EMA (points)"] == difference(precise, ema).points()
        assert float(row["train/eval gap (points)"]) == pytest.approx(50 * sum(gap), abs=0.005)
    # the batch-size table has experiment=batch_size's runs alone (not bn_inference's BN runs at the same sizes),
    # and says what it cannot test
    sizes = _table(md, "BN's dependence on the batch size")
    assert {(r["configuration"], r["batch size"], r["n"]) for r in sizes} == {("BN", "8", "2"), ("BN", "60", "2")}
    claims = [x for x in md.splitlines() if x.startswith("- Paper (") and "(in our words)" in x]
    assert len(claims) == 7
    for line in claims:
        verdict = re.search(r"\*\*(.+?)\*\*", line)[1]
        assert verdict in VERDICTS
    ghost = next(x for x in claims if "ghost BN ends above BN" in x)
    assert "**not testable with these runs**" in ghost
    assert not math.isnan(float(rows[("8", "0.1")]["EMA (%)"]))
