"""Figure 1(a): test accuracy over training with and without BN at one shared learning rate, and its claims."""

from __future__ import annotations

import pandas as pd

from bnrepro.report import claims, draw
from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import accuracy_title, data_name
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._shared import BAND, absent, fig1_groups, pinned_text, shared_lr
from bnrepro.report.slices import BN, SEED, reference_slice
from bnrepro.report.stats import curve, evaluations
from bnrepro.report.thresholds import EARLY_FRACTION, STALL_ACC

STEM = "fig1a_test_accuracy"


def early_step(metrics: pd.DataFrame, *groups: pd.DataFrame) -> int | None:
    """The first evaluation step at >= EARLY_FRACTION of training that every run of every group reports."""
    common: set[int] | None = None
    for runs in groups:
        acc = curve(metrics, runs, "test_acc")
        steps = set(acc.index[acc["count"] == len(runs)])
        common = steps if common is None else common & steps
    ordered = sorted(common or ())
    return next((int(s) for s in ordered if s >= EARLY_FRACTION * ordered[-1]), None) if ordered else None


def first_evaluation(metrics: pd.DataFrame, label: str, runs: pd.DataFrame) -> str | None:
    """"no BN: 91.33%, 90.04%, 87.49% at step 500 (seeds 0, 1, 2)": where each run stands at its first evaluation
    after step 0, so a reader sees whether a network sat at chance while the other learned."""
    rows = evaluations(metrics)
    rows = rows[rows["run"].isin(runs["run"]) & (rows["step"] > 0)]
    if rows.empty:
        return None
    step = int(rows["step"].min())
    at = rows[rows["step"] == step].set_index("run")["test_acc"]
    ordered = runs.sort_values(SEED) if SEED in runs else runs
    values = [claims.pct(float(at[r])) for r in ordered["run"] if r in at.index]
    seeds = f" (seeds {', '.join(str(s) for s in ordered[SEED])})" if SEED in runs else ""
    left = "every run above" if all(float(at[r]) > STALL_ACC for r in ordered["run"] if r in at.index) else \
        "not every run above"
    return f"{label}: {', '.join(values)} at step {step}{seeds}, the first evaluation: {left} {STALL_ACC:.0%}"


def accuracies_at(metrics: pd.DataFrame, runs: pd.DataFrame, step: int) -> list[float]:
    """Each run's test accuracy at `step`, one value per run."""
    rows = evaluations(metrics)
    rows = rows[rows["run"].isin(runs["run"]) & (rows["step"] == step)]
    return rows["test_acc"].astype(float).tolist()


@section(order=10, stems=(STEM,), axes=True)
def fig1a(ctx: Context) -> Section | Skipped:
    title = "Figure 1(a): test accuracy with and without BN"
    runs, pinned = reference_slice(ctx.runs, ctx.varying, [BN], ctx.base_lr)
    groups = fig1_groups(runs)
    if not groups:
        return Skipped(title, "no runs with bn=none or bn=before")
    files = ctx.save(draw.accuracy_figure(ctx.metrics, groups, accuracy_title(runs)), STEM)
    by_bn = {bn: g for bn, _, g in groups}
    base, bn = by_bn.get("none", runs.iloc[:0]), by_bn.get("before", runs.iloc[:0])
    step = early_step(ctx.metrics, base, bn) if len(base) and len(bn) else None
    at_step = [accuracies_at(ctx.metrics, g, step) if step is not None else [] for g in (base, bn)]
    comparison = shared_lr(runs)
    found = [claims.bn_ends_higher(base["final_test_acc"].dropna().astype(float).tolist(),
                                   bn["final_test_acc"].dropna().astype(float).tolist(), comparison),
             claims.bn_trains_faster(step, *at_step, EARLY_FRACTION, comparison)]
    caption = (f"Test accuracy on the {data_name(runs)} test set vs training step, as in the paper's Figure 1(a) "
               f"(y from 0.7, widened only if a curve ends lower), both networks at one shared learning rate. "
               f"{BAND}{pinned_text(pinned)}")
    firsts = [n for _, label, g in groups if (n := first_evaluation(ctx.metrics, label, g))]
    return Section(title, caption, found, files, notes=[*absent(groups), *firsts])
