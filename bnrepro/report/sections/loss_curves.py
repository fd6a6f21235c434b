"""A regression task's runs (e.g. the deep linear network on linear_gaussian): test and training loss over training
per configuration, and a table of where each configuration starts and ends. No claim: the paper's claims are about
accuracy, and Santurkar et al.'s about the DLN are the ICS probe's. Runs with a test accuracy have their own
sections, so this one says nothing about them."""

from __future__ import annotations

import pandas as pd

from bnrepro.report import draw
from bnrepro.report.markdown import Section
from bnrepro.report.names import data_name, model_name
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._shared import BAND
from bnrepro.report.slices import BN, SEED, configurations, describe
from bnrepro.report.stats import evaluations, mean_interval

STEM = "loss_curves"
PANELS = [("test_loss", "test loss"), ("train_loss", "training loss (mean over each interval's steps)")]


def _losses(rows: pd.DataFrame, runs: pd.DataFrame, last: bool) -> list[float]:
    """Each run's test loss at its first (step 0) or last evaluation, in seed order."""
    ordered = runs.sort_values(SEED) if SEED in runs else runs
    mine = rows[rows["run"].isin(ordered["run"])].sort_values("step")
    picked = mine.groupby("run")["test_loss"].last() if last else mine.groupby("run")["test_loss"].first()
    return [float(picked[r]) for r in ordered["run"] if r in picked.index]


def _fmt(x: float) -> str:
    return f"{x:.4g}"


@section(order=12, stems=(STEM,), regression=True)
def loss_curves(ctx: Context) -> Section | None:
    if ctx.accuracy:
        return None
    groups = [(str(values.get(BN, "")), describe(values) or "all runs", runs)
              for values, runs in configurations(ctx.runs, ctx.varying)]
    title = f"{data_name(ctx.runs)}: l2 loss over training ({model_name(ctx.runs)})"
    files = ctx.save(draw.loss_figure(ctx.metrics, groups, PANELS, title), STEM)
    rows = evaluations(ctx.metrics)
    table = []
    for label, runs in ((label, runs) for _, label, runs in groups):
        first, final = _losses(rows, runs, last=False), _losses(rows, runs, last=True)
        iv = mean_interval(final)
        table.append({"configuration": label, "n": len(runs), "diverged": int((runs["status"] == "diverged").sum()),
                      "test loss at step 0 (mean)": _fmt(sum(first) / len(first)) if first else "–",
                      "final test loss (mean)": _fmt(sum(final) / len(final)) if final else "–",
                      "95% CI": "–" if iv is None else f"{_fmt(iv.low)} to {_fmt(iv.high)}",
                      "per seed": ", ".join(map(_fmt, final))})
    caption = (f"The l2 loss (mean over samples of the squared error summed over outputs) on the test set (left) and "
               f"the training set (right) vs training step, log y; the table: each run's test loss at step 0 and at "
               f"its last evaluation (a diverged run's last before it diverged). {BAND}")
    return Section(title, caption, [], files, table=pd.DataFrame(table))
