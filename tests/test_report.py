"""bnrepro-report end to end, on small runs made by the real bnrepro-train CLI.

The expected numbers are recomputed here straight from each run's summary.json, metrics.csv and
.hydra/config.yaml (json/yaml/csv, not the report's loader), then compared with report.md's cells.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from itertools import takewhile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from matplotlib.figure import Figure
from PIL import Image

from bnrepro.config import OptimConfig
from bnrepro.report import claims, draw, sections
from bnrepro.report.claims import LrOutcome, distribution_stable, x30_ends_highest
from bnrepro.report.cli import main
from bnrepro.report.load import load_runs
from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import data_name, model_name
from bnrepro.report.sections import Context, section, unregister
from bnrepro.report.sections.accuracy_table import bn_pairs
from bnrepro.report.slices import choose_base_lr, fixed_by
from bnrepro.report.stats import Drift, difference, mean_interval, t_quantile, taps

# single-threaded torch: on a 2-core box this tiny MLP trains ~10x faster than with 2 threads
SHORT = ("train.steps=300", "train.eval_every=100", "train.progress=false", "train.num_threads=1",
         "wandb.mode=disabled")
BASE = OptimConfig().lr  # the report's default 1x learning rate, and the sweeps' default
FIGURES = ("fig1a_test_accuracy", "tuned_test_accuracy", "fig1bc_percentiles", "fig1bc_seeds",
           "percentiles_all_layers", "lr_sweep", "bn_placement", "grad_norms")


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
        rows.append({"dir": summary.parent, "bn": cfg["model"]["bn"], "lr": cfg["optim"]["lr"], "seed": cfg["seed"],
                     "activation": cfg["model"]["activation"], **json.loads(summary.read_text())})
    return pd.DataFrame(rows)


def _table(md: str, title: str) -> pd.DataFrame:
    """The markdown table under the heading `title` (## or ###), cells as strings."""
    lines = re.split(rf"^#+ {re.escape(title)}\n", md, maxsplit=1, flags=re.MULTILINE)[1].splitlines()
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
        assert int(row["stalled"]) == ((group["status"] == "completed") & (group["best_test_acc"] < 0.2)).sum()
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


def _welch(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """The 95% Welch interval of mean(a) - mean(b), computed here from the textbook formula."""
    va, vb = a.var() / len(a), b.var() / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(df) * (va + vb) ** 0.5
    diff = a.mean() - b.mean()
    return diff - half, diff + half


def test_verdicts_follow_the_numbers(report: Path, sweeps: list[Path]) -> None:
    md = (report / "report.md").read_text()
    final = _runs(sweeps[0])
    bn, base = (final[final["bn"] == b]["final_test_acc"] for b in ("before", "none"))
    line = next(x for x in md.splitlines() if x.startswith('- Paper (Fig. 1(a)): "BN trains faster and ends higher." '
                                                           f"Tested (shared lr {BASE:g}): with BN the network ends"))
    assert f"{_pct(bn.mean())}% (BN) vs {_pct(base.mean())}% (no BN)" in line
    low, high = _welch(bn, base)
    assert f"[{100 * low:+.2f}, {100 * high:+.2f}] points (95% Welch interval)" in line
    verdict = "reproduced" if low > 0 else "not reproduced" if high < 0 else "inconclusive"
    assert f": **{verdict}**. Rule: reproduced only if the 95% Welch t-interval" in line


def test_fig1a_states_where_each_network_is_at_its_first_evaluation(report: Path, sweeps: list[Path]) -> None:
    md = (report / "report.md").read_text()
    runs = _runs(sweeps[0]).sort_values("seed")
    for bn, label in (("none", "no BN"), ("before", "BN")):
        first = [pd.read_csv(d / "metrics.csv").set_index("step").loc[100, "test_acc"]
                 for d in runs[runs["bn"] == bn]["dir"]]
        values = ", ".join(f"{_pct(a)}%" for a in first)
        left = "every run above" if min(first) > 0.2 else "not every run above"
        assert f"- Note: {label}: {values} at step 100 (seeds 0, 1), the first evaluation: {left} 20%" in md


def test_report_records_commands_versions_and_commit(report: Path, sweeps: list[Path]) -> None:
    md = (report / "report.md").read_text()
    summary = json.loads(next(sweeps[0].rglob("summary.json")).read_text())
    assert (f"bnrepro-train -m model.bn=none,before seed=0,1 {' '.join(SHORT)} "
            f"hydra.sweep.dir={sweeps[0]}") in md
    assert f"| torch | {summary['versions']['torch']} |" in md
    assert "Git commit (from summary.json): " + (summary["git_commit"] or "not recorded") in md


def test_accuracy_figure_shows_seed_counts(sweeps: list[Path]) -> None:
    rs = load_runs([sweeps[0]])
    groups = [(bn, bn, rs.runs[rs.runs["model.bn"] == bn]) for bn in ("none", "before")]
    fig = draw.accuracy_figure(rs.metrics, groups, "t")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["none (n=2)", "before (n=2)"]


def test_percentile_figure_draws_one_network_per_panel(sweeps: list[Path]) -> None:
    """Figure 1(b, c): each line is one percentile of one run's unit, the values in its metrics.csv, unaveraged."""
    rs = load_runs([sweeps[0]])
    columns = ["act/h3/p15", "act/h3/p50", "act/h3/p85"]
    panels = [(f"{bn}, seed 1", str(rs.runs[(rs.runs["model.bn"] == bn) & (rs.runs["seed"] == 1)]["run"].iloc[0]))
              for bn in ("none", "before")]
    fig = draw.percentile_figure(rs.metrics, [(panels, columns)], "t")
    for ax, (_, run) in zip(fig.axes, panels, strict=True):
        own = pd.read_csv(Path(run) / "metrics.csv")
        assert len(ax.get_lines()) == len(columns)
        for line, column in zip(ax.get_lines(), columns, strict=True):
            assert list(line.get_ydata()) == own[column].tolist()
    low, high = fig.axes[0].get_ylim()
    assert fig.axes[1].get_ylim() == (low, high) and low <= -2 and high >= 2


def test_fig1bc_draws_the_chosen_seed_and_every_seed_apart(sweeps: list[Path], tmp_path: Path) -> None:
    main([str(sweeps[0]), "--out", str(tmp_path), "--seed", "1", "--formats", "png"])
    md = (tmp_path / "report.md").read_text()
    assert "Drawn: seed 1." in md and "--seed 1" in md
    assert "Nothing is averaged across seeds" in md
    with Image.open(tmp_path / "fig1bc_seeds.png") as small_multiples, \
            Image.open(tmp_path / "fig1bc_percentiles.png") as chosen:
        assert small_multiples.size[1] > 1.5 * chosen.size[1]  # a row per seed (2) under the chosen seed's one


def test_missing_configuration_and_incomplete_run_are_reported(sweeps: list[Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _runs(sweeps[0])
    only_bn = tmp_path / "only_bn"
    for i, run_dir in enumerate(runs[runs["bn"] == "before"]["dir"]):
        shutil.copytree(run_dir, only_bn / f"run{i}")
    shutil.copytree(only_bn / "run0", only_bn / "killed")
    (only_bn / "killed" / "summary.json").unlink()
    monkeypatch.chdir(tmp_path)  # the default --out is relative: reports/<experiment name>
    main([str(only_bn), "--formats", "png"])

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


def test_a_figure_format_other_than_png_or_pdf_is_one_line_before_anything_is_written(
        sweeps: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(sweeps[0]), "--out", str(tmp_path / "report"), "--formats", "png,svg"])
    assert exit_info.value.code == 2 and not (tmp_path / "report").exists()
    assert capsys.readouterr().err == ("bnrepro-report: invalid --formats='png,svg' (allowed: one or more of png, pdf, "
                                       "comma-separated)\n")


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


BASE_DRIFT = Drift(median=pd.Series([1.0, 1.1, 0.9]), spread=pd.Series([2.0, 2.2, 1.8]))


@pytest.mark.parametrize("bn_median, bn_spread, expected", [
    ([0.1, 0.12, 0.08], [0.2, 0.25, 0.15], "reproduced"),  # both far below half the baseline's drift
    ([0.4, 0.6, 0.5], [0.2, 0.25, 0.15], "partly reproduced"),  # the median is not clearly below half
    ([0.4, 0.6, 0.5], [0.9, 1.1, 1.0], "inconclusive"),  # both about half: the seeds cannot tell
    ([0.9, 1.0, 1.1], [1.9, 2.0, 2.1], "not reproduced"),  # BN drifts as much as the baseline
])
def test_stable_means_below_half_the_baseline_beyond_the_seed_spread(bn_median: list[float], bn_spread: list[float],
                                                                     expected: str) -> None:
    claim = distribution_stable("h3", BASE_DRIFT, Drift(pd.Series(bn_median), pd.Series(bn_spread)))
    assert claim.verdict == expected
    if expected == "partly reproduced":
        assert "The 15-85 spread part holds; the median part does not" in claim.found


@pytest.mark.parametrize("x30, expected", [
    ([0.9790, 0.9795, 0.9800], "reproduced"), ([0.9765, 0.9785, 0.9775], "inconclusive"),
    ([0.9700, 0.9705, 0.9710], "not reproduced")])
def test_x30_beats_x5_only_beyond_the_seed_spread(x30: list[float], expected: str) -> None:
    assert x30_ends_highest(x30, [0.9768, 0.9770, 0.9772]).verdict == expected


def test_t_quantiles_and_intervals_match_the_textbook() -> None:
    assert [round(t_quantile(df), 3) for df in (1, 2, 4, 30)] == [12.706, 4.303, 2.776, 2.042]
    assert abs(t_quantile(1e6) - 1.960) < 1e-3
    iv = mean_interval([0.97, 0.98, 0.99])
    assert iv is not None and abs(iv.high - 0.98 - 4.303 * 0.01 / 3**0.5) < 1e-5
    welch = difference([1.0, 2.0, 3.0], [0.0, 0.5, 1.0])  # variances 1 and 0.25: df = 2.94, not 4
    low, high = _welch(pd.Series([1.0, 2.0, 3.0]), pd.Series([0.0, 0.5, 1.0]))
    assert welch is not None and abs(welch.low - low) < 1e-9 and abs(welch.high - high) < 1e-9
    assert difference([1.0], [0.0, 1.0]) is None  # one seed has no spread to judge by


def _outcome(lr: float, diverged: int = 0, stalled: int = 0, final: float = 0.97) -> LrOutcome:
    return LrOutcome(lr, 3, diverged, stalled, final)


def test_high_lr_claims_need_the_papers_contrast() -> None:
    base = 0.1
    trains_at_5x = claims.high_lr_without_bn_diverges(_outcome(0.5), _outcome(30.0, stalled=3), base)
    assert trains_at_5x.verdict == "not reproduced"
    assert "first fails at lr 30 (300x)" in trains_at_5x.found
    assert claims.high_lr_without_bn_diverges(_outcome(0.5, stalled=3), None, base).verdict == "partly reproduced"
    assert claims.high_lr_without_bn_diverges(_outcome(0.5, diverged=3), None, base).verdict == "reproduced"

    bn = {5: _outcome(0.5), 30: _outcome(3.0)}
    both_train = claims.high_lr_with_bn_trains(bn, {5: _outcome(0.5), 30: _outcome(3.0)}, base)
    assert both_train.verdict == "partly reproduced"
    assert "the network without BN trains at 5x too, so the contrast the paper draws is missing" in both_train.found
    assert claims.high_lr_with_bn_trains(bn, {5: _outcome(0.5, diverged=2, stalled=1)}, base).verdict == "reproduced"
    assert claims.high_lr_with_bn_trains({**bn, 30: _outcome(3.0, diverged=1)}, {}, base).verdict == "not reproduced"


def test_sigmoid_claim_needs_the_baseline_to_fail() -> None:
    trains_anyway = claims.sigmoid_trains_only_with_bn(_outcome(0.1), _outcome(0.1, final=0.966), 0.1)
    assert trains_anyway.verdict == "partly reproduced" and "the paper's contrast is missing" in trains_anyway.found
    never_trains = claims.sigmoid_trains_only_with_bn(_outcome(0.1), _outcome(0.1, stalled=3, final=0.1), 0.1)
    assert never_trains.verdict == "reproduced"


def test_fewer_steps_needs_every_seed_ahead() -> None:
    args = ("BN", "Baseline")
    assert claims.fewer_steps(*args, [1000, 1500], [4000, None], "c").verdict == "reproduced"
    assert claims.fewer_steps(*args, [1000, 5000], [4000, None], "c").verdict == "inconclusive"
    assert claims.fewer_steps(*args, [None, None], [4000, 5000], "c").verdict == "not reproduced"


def test_every_verdict_is_one_of_the_known_ones_with_a_named_rule(report: Path) -> None:
    for c in json.loads((report / "numbers.json").read_text())["claims"]:
        assert c["verdict"] in claims.VERDICTS
        assert c["quote"] in claims.QUOTES.values()
        if c["verdict"] != claims.UNTESTABLE:
            assert "thresholds." in c["rule"], c


def test_tuned_table_picks_each_networks_best_rate(report: Path, sweeps: list[Path]) -> None:
    table = _table((report / "report.md").read_text(),
                   "Tuned comparison: each configuration at its own best learning rate").set_index(["activation", "bn"])
    runs = _runs(*sweeps)
    sigmoid = runs[runs["activation"] == "sigmoid"]
    for bn in ("none", "before"):
        trained = sigmoid[sigmoid["bn"] == bn].groupby("lr").filter(
            lambda g: (g["status"] == "completed").all() and (g["best_test_acc"] >= 0.2).all())
        means = trained.groupby("lr")["final_test_acc"].mean()
        best = means.idxmax()
        finals = trained[trained["lr"] == best]["final_test_acc"]
        row = table.loc[("sigmoid", bn)]
        assert row["best lr"] == f"{best:g}"
        assert row["final mean (%)"] == _pct(finals.mean())
        interval = mean_interval(finals.tolist())
        assert row["final 95% CI (%)"] == (f"{_pct(interval.low)} to {_pct(interval.high)}" if interval
                                                     else "–")


def test_placement_compares_each_configuration_at_its_own_best_rate(report: Path, sweeps: list[Path]) -> None:
    md = (report / "report.md").read_text()
    runs = _runs(*sweeps)
    relu = runs[runs["activation"] == "relu"]
    for bn, group in relu.groupby("bn"):
        trained = group.groupby("lr").filter(
            lambda g: (g["status"] == "completed").all() and (g["best_test_acc"] >= 0.2).all())
        if trained.empty:
            assert f"- Note: relu, bn={bn}: no learning rate at which every seed trained; left out" in md
        else:
            means = trained.groupby("lr")["final_test_acc"].mean()
            assert f"bn={bn}, lr {means.idxmax():g} {_pct(means.max())}%" in md


def test_numbers_json_holds_the_reports_tables_and_claims(report: Path) -> None:
    md = (report / "report.md").read_text()
    numbers = json.loads((report / "numbers.json").read_text())
    for title, rows in numbers["tables"].items():
        assert _table(md, title).to_dict("records") == [{k: str(v) for k, v in r.items()} for r in rows]
    sentences = [line for line in md.splitlines() if line.startswith("- Paper (")]
    for c in numbers["claims"]:
        assert any(c["found"] in s and f"**{c['verdict']}**" in s for s in sentences), c["claim"]


def _copy_runs(folders: list[Path], to: Path) -> list[Path]:
    """Copies of the run folders under `folders`, one subfolder per source folder (sweep files left behind)."""
    copies = []
    for folder in folders:
        for i, summary in enumerate(sorted(folder.rglob("summary.json"))):
            shutil.copytree(summary.parent, to / folder.name / f"run{i}")
        copies.append(to / folder.name)
    return copies


def _png_title(path: Path) -> str:
    with Image.open(path) as img:
        return img.text["Title"]


def test_every_figure_file_is_declared_by_a_registered_section(report: Path) -> None:
    made = {p.stem for p in report.iterdir() if p.suffix in (".png", ".pdf")}
    # the other sections' figures need run sets of their own (recipes, a depth sweep; their tests make them), so a
    # Figure 1 run set makes exactly Figure 1's and the lr sweep's
    assert made == set(FIGURES) and made <= set(sections.stems())


TEST_STEM = "runs_per_bn_from_a_test"


def _runs_per_bn(ctx: Context) -> Section | Skipped:
    title = "Runs per BN mode (a section registered by a test)"
    if len(ctx.runs) < 2:
        return Skipped(title, "fewer than two runs")
    fig = Figure()
    counts = ctx.runs["model.bn"].value_counts()
    fig.subplots().bar(counts.index, counts.to_numpy())
    return Section(title, f"{len(ctx.runs)} runs of {ctx.model}.", files=ctx.save(fig, TEST_STEM))


@pytest.fixture
def section_from_a_test() -> Iterator[None]:
    section(order=15, stems=(TEST_STEM,))(_runs_per_bn)
    yield
    unregister(_runs_per_bn)


@pytest.mark.usefixtures("section_from_a_test")
def test_a_registered_section_appears_in_order_and_its_stale_figure_is_cleared(sweeps: list[Path],
                                                                               tmp_path: Path) -> None:
    main([str(sweeps[0]), "--out", str(tmp_path)])
    md = (tmp_path / "report.md").read_text()
    assert "*4 runs of MLP.*" in md and (tmp_path / f"{TEST_STEM}.png").exists()
    # order 15: after Figure 1(a) (10), before Figure 1(b, c) (20)
    headings = [line for line in md.splitlines() if line.startswith("### ")]
    mine = headings.index("### Runs per BN mode (a section registered by a test)")
    assert headings[mine - 1].startswith("### Figure 1(a)") and headings[mine + 1].startswith("### Figure 1(b, c)")

    one_run = next(sweeps[0].rglob("summary.json")).parent  # too few runs: the section skips itself
    main([str(one_run), "--out", str(tmp_path)])
    md = (tmp_path / "report.md").read_text()
    assert "- **Runs per BN mode (a section registered by a test)**: fewer than two runs" in md
    assert not (tmp_path / f"{TEST_STEM}.png").exists() and not (tmp_path / f"{TEST_STEM}.pdf").exists()


def test_a_figure_stem_must_be_declared_and_belongs_to_one_section(tmp_path: Path) -> None:
    empty = pd.DataFrame()
    ctx = Context(empty, empty, [], None, tmp_path, "MLP", "MNIST")
    with pytest.raises(ValueError, match="not declared"):
        ctx.save(Figure(), "undeclared_stem")
    with pytest.raises(ValueError, match="already declared"):
        section(order=99, stems=("fig1a_test_accuracy",))(_runs_per_bn)
    assert "_runs_per_bn" not in {e.name.rsplit(".", 1)[-1] for e in sections.registered()}


def _add_probe_rows(metrics_csv: Path) -> None:
    """Per-step probe rows between and at evaluation steps: only a probe column, everything else empty."""
    evals = pd.read_csv(metrics_csv)
    probe_steps = [s for s in range(0, int(evals["step"].max()) + 1, 50) if s > 0]
    probes = pd.DataFrame({"step": probe_steps, "grad_norm/weight/h1": [0.5 + s for s in probe_steps]})
    rows = pd.concat([evals, probes], ignore_index=True).sort_values("step", kind="stable")
    rows.to_csv(metrics_csv, index=False)


def test_probe_rows_change_no_table_claim_or_figure(report: Path, sweeps: list[Path], tmp_path: Path) -> None:
    copies = _copy_runs(sweeps, tmp_path / "runs")
    for metrics_csv in (tmp_path / "runs").rglob("metrics.csv"):
        _add_probe_rows(metrics_csv)
    probed = pd.read_csv(next((tmp_path / "runs").rglob("metrics.csv")))
    assert probed["test_acc"].isna().sum() >= 2 and "grad_norm/weight/h1" in probed  # the copies do have probes

    main([*map(str, copies), "--out", str(tmp_path / "report"), "--formats", "png"])
    md, md_probed = (report / "report.md").read_text(), (tmp_path / "report" / "report.md").read_text()
    for title in ("The paper's claims at a glance", "Accuracy per configuration",
                  "Tuned comparison: each configuration at its own best learning rate",
                  "Steps to reach the baseline's best accuracy (Sec. 4.2's table, small)",
                  "Divergence per learning rate"):
        pd.testing.assert_frame_equal(_table(md_probed, title), _table(md, title))
    assert {p.stem for p in (tmp_path / "report").glob("*.png")} == set(FIGURES)


def test_titles_and_captions_name_the_model_and_data_set(sweeps: list[Path], tmp_path: Path) -> None:
    (copy,) = _copy_runs([sweeps[0]], tmp_path / "runs")
    for summary_path in copy.rglob("summary.json"):
        summary = json.loads(summary_path.read_text())
        summary_path.write_text(json.dumps({**summary, "model_name": "CNN", "data_name": "Fashion-MNIST"}))
    main([str(copy), "--out", str(tmp_path / "report"), "--formats", "png"])
    out = tmp_path / "report"
    md = (out / "report.md").read_text()

    assert _png_title(out / "fig1a_test_accuracy.png") == "Fashion-MNIST test accuracy (CNN)"
    assert _png_title(out / "fig1bc_percentiles.png").endswith("over the Fashion-MNIST test set (CNN)")
    assert "- Model: CNN; data set: Fashion-MNIST" in md
    assert "Test accuracy on the Fashion-MNIST test set vs training step" in md
    prose = "\n".join(line for line in md.splitlines() if not line.startswith("|"))  # the setup table has paths
    assert "MNIST" not in prose.replace("Fashion-MNIST", "") and "10k" not in prose


def test_names_come_from_the_summary_then_the_config_target_then_the_paper() -> None:
    runs = pd.DataFrame([
        {"model_name": "CNN", "model._target_": "bnrepro.models.other.Other", "data_name": "Fashion-MNIST"},
        {"model._target_": "bnrepro.models.cnn.CNN", "data._target_": "bnrepro.data.fashion_mnist.FashionMNIST"},
        {}])
    assert [model_name(runs.iloc[[i]]) for i in range(3)] == ["CNN", "CNN", "MLP"]
    assert [data_name(runs.iloc[[i]]) for i in range(3)] == ["Fashion-MNIST", "FashionMNIST", "MNIST"]
    assert data_name(runs) == "Fashion-MNIST, FashionMNIST, MNIST"  # a mixed run set names each once


def test_taps_keep_the_models_order_from_metrics_columns() -> None:
    convnet = pd.DataFrame({"step": [100], "act/stem/p50": [0.1], "act/block1/p50": [0.2], "act/head/p50": [0.3],
                            "run": "convnet"})
    mlp = pd.DataFrame({"step": [100], "test_acc": [0.9], "act/h1/p50": [0.1], "act/h2/p50": [0.2],
                        "act/h10/p50": [0.3], "run": "mlp"})
    metrics = pd.concat([convnet, mlp], ignore_index=True)
    assert taps(metrics) == ["stem", "block1", "head", "h1", "h2", "h10"]
    assert taps(metrics[metrics["run"] == "mlp"]) == ["h1", "h2", "h10"]  # the other model's columns are empty


def test_settings_of_another_model_do_not_break_the_slices(sweeps: list[Path], tmp_path: Path) -> None:
    """Half the fig1 runs become "CNN" runs, with model keys the MLP lacks and without model.hidden."""
    (copy,) = _copy_runs([sweeps[0]], tmp_path / "runs")
    for summary_path in copy.rglob("summary.json"):
        config_path = summary_path.parent / ".hydra" / "config.yaml"
        config = yaml.safe_load(config_path.read_text())
        if config["seed"] == 1:
            del config["model"]["hidden"]
            config["model"] |= {"_target_": "bnrepro.models.cnn.CNN", "channels": [8, 16], "dropout": 0.1}
            config_path.write_text(yaml.safe_dump(config))
            summary = json.loads(summary_path.read_text())
            summary_path.write_text(json.dumps({**summary, "model_name": "CNN"}))
    main([str(copy), "--out", str(tmp_path / "report"), "--formats", "png"])
    md = (tmp_path / "report" / "report.md").read_text()

    table = _table(md, "Accuracy per configuration")
    assert len(table) == 4 and set(table["n"]) == {"1"}  # 2 models x 2 BN modes, one seed each
    assert set(table["channels"]) == {"[8,16]", "–"}  # the MLP has no channels
    fig1a_title = _png_title(tmp_path / "report" / "fig1a_test_accuracy.png")
    assert fig1a_title in ("MNIST test accuracy (MLP)", "MNIST test accuracy (CNN)")  # pinned to one model
    assert "- Model: MLP, CNN; data set: MNIST" in md
    assert "channels=None" not in md and "dropout=None" not in md  # a setting the pinned model lacks reads "–"


def test_a_named_configuration_is_labelled_by_the_keys_its_recipe_does_not_decide() -> None:
    runs = pd.DataFrame({"variant": ["BN", "BN", "BRN", "BRN", "no BN"],
                         "model.norm": ["bn", "bn", "brn", "brn", "bn"],
                         "train.batch_size": [2, 60, 2, 60, 2]})
    assert fixed_by(runs, ["model.norm", "train.batch_size"]) == {"model.norm"}
    assert fixed_by(runs.drop(columns="variant"), ["model.norm"]) == set()  # no names: nothing is decided by one
    groups = [({"model.bn": bn, "train.batch_size": 2}, pd.DataFrame({"final_test_acc": accs}))
              for bn, accs in (("before", [0.9, 0.8]), ("none", [0.5, 0.4]))]
    keys = ["model.bn", "train.batch_size"]
    assert [name for name, _ in bn_pairs(groups, keys)] == ["batch_size=2"]
    assert [name for name, _ in bn_pairs(groups, keys, unnamed={"train.batch_size"})] == ["bn=before"]
