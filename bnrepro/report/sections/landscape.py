"""The loss landscape along the gradient (experiment=landscape): Santurkar et al. 2018's Sec. 3.2 measures over
training, BN vs no BN at each learning rate of the run set, and their claims that BN makes the landscape smoother.

Columns landscape/loss/{min,max}, landscape/grad_change/{min,max} and landscape/beta (probes/landscape.py).
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import data_name, model_name
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._probed import SANTURKAR, STYLE, band, bn_groups, log_difference, parts_claim, per_run
from bnrepro.report.sections._shared import pinned_text
from bnrepro.report.slices import BN, LR, fmt_value, matches, reference_slice
from bnrepro.report.thresholds import CONFIDENCE, SMOOTHER_RATIO

STEM = "landscape"
EVERY = "probes.landscape.every"
# (panel title, y label, the band's low and high column: high None draws min-max over seeds)
PANELS = (("loss variation", "loss along the gradient", "landscape/loss/min", "landscape/loss/max"),
          ("gradient predictiveness", "||grad(w - eta g) - g||", "landscape/grad_change/min",
           "landscape/grad_change/max"),
          ("effective beta-smoothness", "max ||delta grad|| / ||delta w||", "landscape/beta", None))
# (what the claim measures, per run: the column, or "range" for loss max - loss min; the finding in our words)
CLAIMS = (("gradient predictiveness (largest gradient change)", "landscape/grad_change/max",
           "With BN the gradient changes less along the step: it predicts the gradient a step away better."),
          ("effective beta-smoothness", "landscape/beta",
           "With BN the loss's gradient is more Lipschitz along the step (smaller effective beta-smoothness)."),
          ("loss variation (max - min along the step)", "range",
           "With BN the loss varies less as the weights move along the gradient."))


def _loss_range(ctx: Context, runs: pd.DataFrame) -> list[float]:
    """Each run's median over probed steps of (loss max - loss min) along the step; an overflowed loss as +inf."""
    metrics = ctx.metrics.assign(**{"landscape/range": ctx.metrics.get("landscape/loss/max", math.nan)
                                    - ctx.metrics.get("landscape/loss/min", math.nan)})
    return per_run(metrics, runs, "landscape/range")


def _figure(ctx: Context, by_lr: dict[str, dict[str, pd.DataFrame]], title: str) -> Figure:
    fig = Figure(figsize=(4.2 * len(PANELS), 3.4 * len(by_lr)), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(len(by_lr), len(PANELS), squeeze=False, sharex=True)
    for row, (lr, groups) in enumerate(by_lr.items()):
        for col, (panel, ylabel, low, high) in enumerate(PANELS):
            ax = axes[row][col]
            for bn, runs in groups.items():
                color, name = STYLE[bn]
                band(ax, ctx.metrics, runs, low, high, color, name)
            ax.set_yscale("log")
            ax.set_title(f"{panel}, lr {lr}")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, which="both")
        axes[row][0].legend(fontsize="small")
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    return fig


@section(order=91, stems=(STEM,))
def landscape(ctx: Context) -> Section | Skipped | None:
    if "landscape/beta" not in ctx.metrics or EVERY not in ctx.runs:
        return None
    runs, pinned = reference_slice(ctx.runs[ctx.runs[EVERY].notna()], ctx.varying, [BN, LR], ctx.base_lr)
    where = f"{model_name(runs)} on {data_name(runs)}"
    title = f"The loss landscape along the gradient (Santurkar et al. Sec. 3.2; {where})"
    lrs = sorted(runs[LR].astype(float).unique()) if LR in runs and len(runs) else []
    by_lr = {fmt_value(lr): groups for lr in lrs if (groups := bn_groups(runs[matches(runs, LR, lr)]))}
    if not by_lr:
        return Skipped(title, "no runs without or with BN (before) that ran the landscape probe in this slice")
    rule = (f"at each learning rate, the {CONFIDENCE:.0%} Welch interval of log10(BN) - log10(no BN) of the runs' "
            f"medians over training (thresholds.CONFIDENCE) wholly below log10({SMOOTHER_RATIO:g}) "
            "(thresholds.SMOOTHER_RATIO: smaller by a clear factor); reproduced if so at every rate; runs whose "
            "median overflowed are left out of the interval")
    found = []
    for measured, column, finding in CLAIMS:
        parts = []
        for lr, groups in by_lr.items():
            none, bn = (groups.get(b, runs.iloc[:0]) for b in ("none", "before"))
            values = [_loss_range(ctx, g) if column == "range" else per_run(ctx.metrics, g, column) for g in (bn, none)]
            iv = log_difference(*values)
            bar = math.log10(SMOOTHER_RATIO)  # the interval is judged against the bar, so shift it to 0
            parts.append((f"lr {lr}", None if iv is None else type(iv)(iv.estimate - bar, iv.low - bar, iv.high - bar)))
        found.append(parts_claim(SANTURKAR + ", Sec. 3.2 and Fig. 4", finding, f"with BN the {measured} is "
                                 f"below {SMOOTHER_RATIO:g}x the network without BN's", parts, "below", rule,
                                 f"decades beyond log10({SMOOTHER_RATIO:g})"))
    caption = ("At every probed step, the weights moved along the step's gradient g by step sizes from "
               "landscape.low to landscape.high x lr (probes/landscape.py) on the step's batch. Loss variation: "
               "the band runs from the seed mean of the smallest to the seed mean of the largest loss along the "
               "step; gradient predictiveness: likewise for ||grad L(w - eta g) - g||; effective beta-smoothness: "
               "the largest ||delta grad|| / ||delta w||, seed mean with a min-max band over seeds. Log y; an "
               "overflowed value is left out of the curves. The claims compare each run's median over its probed "
               "steps." + pinned_text(pinned))
    return Section(title, caption, found, files=ctx.save(_figure(ctx, by_lr, title), STEM))
