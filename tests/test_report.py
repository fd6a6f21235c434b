"""bnrepro-report end to end, on small runs made by the real bnrepro-train CLI.

The expected numbers are recomputed here straight from each run's summary.json, metrics.csv and
.hydra/config.yaml (json/yaml/csv, not the report's loader), then compared with report.md's cells.
"""

from __future__ import annotations

import json
import shutil
from itertools import takewhile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from bnrepro.config import OptimConfig
from bnrepro.report import draw
from bnrepro.report.claims import distribution_stable, x30_ends_highest
from bnrepro.report.cli import main
from bnrepro.report.load import load_runs
from bnrepro.report.slices import choose_base_lr
from bnrepro.report.stats import Drift

# single-threaded torch: on a 2-core box this tiny MLP trains ~10x faster than with 2 threads
SHORT = ("train.steps=300", "train.eval_every=100", "train.progress=false", "train.num_threads=1",
         "wandb.mode=disabled")
BASE = OptimConfig().lr  # the report's default 1x learning rate, and the sweeps' default
FIGURES = ("fig1a_test_accuracy", "fig1bc_percentiles", "percentiles_all_layers", "lr_sweep", "bn_placement",
           "grad_norms")


@pytest.fixture(scope="module")
def sweeps(cli, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """fig1-like (bn none/before x 2 seeds), lr x5/x30, BN placement with ReLU (x300 diverges): 14 short runs."""
    root = tmp_path_factory.mktemp("sweeps")
    grids = {"fig1": ("model.bn=none,before", "seed=0,1"),
             "lr": ("model.bn=none,before", f"optim.lr={5 * BASE:g},{30 * BASE:g}"),
             "placement": ("model.bn=none,before,after", "model.activation=relu", f"optim.lr={BASE:g},{300 * BASE:g}")}
    for name, axes in grids.items():
        cli("-m", *axes, *SHORT, f"hydra.sweep.dir={root / name}")
    return [root / name for name in grids]


@pytest.fixture(scope="module")
def report(sweeps: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    main([*map(str, sweeps), "--out", str(out)])
    return out


def _runs(*folders: Path) -> pd.DataFrame:
    """One row per run folder under `folders`, read without the report's code."""
    rows = []
    for summary in sorted(p for f in folders for p in f.rglob("summary.json")):
        cfg = yaml.safe_load((summary.parent / ".hydra" / "config.yaml").read_text())
        rows.append({"dir": summary.parent, "bn": cfg["model"]["bn"], "lr": cfg["optim"]["lr"],
                     "activation": cfg["model"]["activation"], **json.loads(summary.read_text())})
    return pd.DataFrame(rows)


def _table(md: str, title: str) -> pd.DataFrame:
    """The markdown table under `### title`, cells as strings."""
    lines = md.split(f"### {title}\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = takewhile(lambda line: line.startswith("|"), lines[start:])
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in block]
    return pd.DataFrame(cells[2:], columns=cells[0])


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _mean_curve(runs: pd.DataFrame) -> pd.Series:
    """Seed-mean test accuracy per step, over the steps that every run reports."""
    curves = [pd.read_csv(d / "metrics.csv").set_index("step")["test_acc"] for d in runs["dir"]]
    return pd.concat(curves, axis=1).dropna().mean(axis=1)


def test_every_figure_is_a_readable_png_and_pdf(report: Path) -> None:
    md = (report / "report.md").read_text()
    for stem in FIGURES:
        with Image.open(report / f"{stem}.png") as img:
            img.verify()
            assert img.size[0] > 200 and img.size[1] > 200
        assert (report / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
        assert f"]({stem}.png)" in md
    assert "## Not made, and why" not in md


def test_accuracy_table_equals_the_runs_summaries(report: Path, sweeps: list[Path]) -> None:
    table = _table((report / "report.md").read_text(), "Accuracy per configuration")
    runs = _runs(*sweeps)
    assert len(table) == runs.groupby(["activation", "bn", "lr"]).ngroups == 12
    for _, row in table.iterrows():
        group = runs[(runs["activation"] == row["activation"]) & (runs["bn"] == row["bn"])
                     & (runs["lr"].round(9) == round(float(row["lr"]), 9))]
        final = group["final_test_acc"].dropna()
        assert int(row["n"]) == len(group)
        assert int(row["diverged"]) == (group["status"] == "diverged").sum()
        assert row["final mean (%)"] == (_pct(final.mean()) if len(final) else "–")
        assert row["best mean (%)"] == _pct(group["best_test_acc"].mean())
        assert row["best std"] == (_pct(group["best_test_acc"].std()) if len(group) > 1 else "–")


def test_steps_table_equals_first_reach_in_metrics(report: Path, sweeps: list[Path]) -> None:
    table = _table((report / "report.md").read_text(), "Steps to reach the baseline's best accuracy "
                   "(Sec. 4.2's table, small)").set_index("row")
    runs = _runs(*sweeps)
    rows = {"Baseline": ("sigmoid", "none", 1), "BN": ("sigmoid", "before", 1),
            "BN-x5": ("sigmoid", "before", 5), "BN-x30": ("sigmoid", "before", 30),
            "Baseline-relu": ("relu", "none", 1), "BN-relu": ("relu", "before", 1)}
    assert sorted(table.index) == sorted(rows)

    def group(name: str) -> pd.DataFrame:
        act, bn, times = rows[name]
        same_lr = (runs["lr"] / BASE).round(6) == times
        return runs[(runs["activation"] == act) & (runs["bn"] == bn) & same_lr]

    target = _mean_curve(group("Baseline")).max()
    for name in rows:
        curve = _mean_curve(group(name))
        reached = curve.index[curve >= target]
        assert table.loc[name, "steps to target"] == (str(reached[0]) if len(reached) else "never"), name
        assert table.loc[name, "best seed-mean acc (%)"] == _pct(curve.max()), name
        assert table.loc[name, "n"] == str(len(group(name)))


def test_divergence_table_counts_the_runs(report: Path, sweeps: list[Path]) -> None:
    table = _table((report / "report.md").read_text(), "Divergence per learning rate")
    runs = _runs(*sweeps)
    assert (runs["status"] == "diverged").any()  # ReLU at 300x: the counts below are not all 0/n
    assert list(zip(table["activation"], table["x base"], strict=True)) == [
        ("relu", "1x"), ("relu", "300x"), ("sigmoid", "1x"), ("sigmoid", "5x"), ("sigmoid", "30x")]
    table = table.set_index(["activation", "lr"])
    for (act, lr, bn), group in runs.groupby(["activation", "lr", "bn"]):
        never_learned = (group["status"] == "completed") & (group["best_test_acc"] < 0.2)
        expected = f"{(group['status'] == 'diverged').sum()}/{never_learned.sum()}/{len(group)}"
        assert table.loc[(act, f"{lr:g}"), f"bn={bn} diverged/stalled/total"] == expected


def test_verdicts_follow_the_numbers(report: Path, sweeps: list[Path]) -> None:
    md = (report / "report.md").read_text()
    final = _runs(sweeps[0]).groupby("bn")["final_test_acc"].mean()
    line = next(x for x in md.splitlines() if x.startswith("- Paper (Fig. 1(a)): with BN the network ends"))
    assert f"{_pct(final['before'])}%" in line and f"{_pct(final['none'])}%" in line
    verdict = "reproduced" if final["before"] > final["none"] else "not reproduced"
    assert line.endswith(f"(BN vs baseline): **{verdict}**.")


def test_report_records_commands_versions_and_commit(report: Path, sweeps: list[Path]) -> None:
    md = (report / "report.md").read_text()
    summary = json.loads(next(sweeps[0].rglob("summary.json")).read_text())
    assert (f"bnrepro-train -m model.bn=none,before seed=0,1 {' '.join(SHORT)} "
            f"hydra.sweep.dir={sweeps[0]}") in md
    assert f"| torch | {summary['versions']['torch']} |" in md
    assert "Git commit (from summary.json): " + (summary["git_commit"] or "not recorded") in md


def test_figures_show_seed_counts_and_share_the_percentile_scale(sweeps: list[Path]) -> None:
    rs = load_runs([sweeps[0]])
    groups = [(bn, bn, rs.runs[rs.runs["model.bn"] == bn]) for bn in ("none", "before")]
    fig = draw.accuracy_figure(rs.metrics, groups, "t")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["none (n=2)", "before (n=2)"]
    fig = draw.percentile_figure(rs.metrics, groups, [("h3", ["act/h3/p15", "act/h3/p50", "act/h3/p85"])])
    low, high = fig.axes[0].get_ylim()
    assert fig.axes[1].get_ylim() == (low, high) and low <= -2 and high >= 2


def test_missing_configuration_and_incomplete_run_are_reported(sweeps: list[Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _runs(sweeps[0])
    only_bn = tmp_path / "only_bn"
    for i, run_dir in enumerate(runs[runs["bn"] == "before"]["dir"]):
        shutil.copytree(run_dir, only_bn / f"run{i}")
    shutil.copytree(only_bn / "run0", only_bn / "killed")
    (only_bn / "killed" / "summary.json").unlink()
    monkeypatch.chdir(tmp_path)  # the default --out is relative: reports/<experiment name>
    main([str(only_bn)])

    out = tmp_path / "reports" / "default"
    md = (out / "report.md").read_text()
    assert f"incomplete run (no summary.json): {only_bn / 'killed'}" in md
    assert "Note: no runs with bn=none in this slice" in md
    assert "Here: no finished runs without BN: **not testable with these runs**." in md
    assert f"Note: missing row Baseline: no runs with bn=none at lr={BASE:g} (1x)" in md
    assert "- **Learning-rate sweep**: the run set has a single learning rate" in md
    assert not (out / "lr_sweep.png").exists() and (out / "fig1a_test_accuracy.png").exists()
    command = next(x for x in md.splitlines() if x.startswith("bnrepro-train model.bn=before seed=0 "))
    assert f"seed=0 {SHORT[0]} {SHORT[1]} " in command and "hydra.sweep" not in command


def test_no_runs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 1


def test_base_lr_prefers_the_flag_then_the_default_config_then_the_most_common() -> None:
    others = [BASE * 7, BASE * 7, BASE * 3, BASE * 3]  # a tie: the smallest of the most common wins
    runs = pd.DataFrame({"optim.lr": [*others, BASE]})
    assert choose_base_lr(runs, 0.25)[0] == 0.25
    assert choose_base_lr(runs, None)[0] == BASE
    lr, how = choose_base_lr(runs.iloc[:4], None)
    assert lr == BASE * 3 and "most common" in how and "a tie" in how


@pytest.mark.parametrize("bn_median, bn_spread, expected", [
    (0.4, 1.0, "reproduced"),  # both at most half the baseline's drift (1.0, 2.0)
    (0.9, 1.0, "partly reproduced"),  # the median barely steadier than without BN: not "stable"
    (0.9, 1.9, "not reproduced"),
])
def test_stable_means_a_clear_difference_not_any(bn_median: float, bn_spread: float, expected: str) -> None:
    claim = distribution_stable("h3", Drift(median=1.0, spread=2.0), Drift(median=bn_median, spread=bn_spread))
    assert claim.verdict == expected


@pytest.mark.parametrize("x30, noise, expected", [
    (0.9780, 0.0010, "reproduced"), (0.9772, 0.0015, "partly reproduced"), (0.9760, 0.0015, "not reproduced")])
def test_x30_beats_x5_only_by_more_than_the_seed_spread(x30: float, noise: float, expected: str) -> None:
    assert x30_ends_highest(x30, 0.9770, noise).verdict == expected
