"""Divergence per learning rate: diverged/stalled/total runs per BN mode, and Sec. 4.2's divergence claims."""

from __future__ import annotations

import pandas as pd

from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.outcomes import lr_claims, n_diverged, stalled
from bnrepro.report.sections import Context, section
from bnrepro.report.slices import BN, LR, configurations, fmt_value, matches, order_key, short_name
from bnrepro.report.thresholds import STALL_ACC


@section(order=80, axes=True)
def divergence_table(ctx: Context) -> Section | Skipped:
    title = "Divergence per learning rate"
    runs, varying, base_lr = ctx.runs, ctx.varying, ctx.base_lr
    if LR not in runs or BN not in runs:
        return Skipped(title, f"the runs do not record {LR} and {BN}")
    modes = sorted(runs[BN].unique(), key=lambda b: order_key(BN, b))
    others = [k for k in varying if k not in (LR, BN)]  # e.g. activation: one row per value and lr
    rows = []
    for values, group in configurations(runs, others):
        for lr in sorted(group[LR].astype(float).unique()):
            at = group[matches(group, LR, lr)]
            row = {**{short_name(k, varying): fmt_value(v) for k, v in values.items()},
                   "lr": f"{lr:g}", "x base": f"{lr / base_lr:g}x" if base_lr else "–"}
            for bn in modes:
                n = at[at[BN] == bn]
                row[f"bn={bn} diverged/stalled/total"] = (f"{n_diverged(n)}/{int(stalled(n).sum())}/{len(n)}"
                                                         if len(n) else "–")
            rows.append(row)
    caption = ("Runs that diverged (training loss NaN/inf or above train.max_loss) and runs that stalled "
               f"(completed, but never above {STALL_ACC:.0%} test accuracy: chance is 10%) out of the finished "
               "runs at each learning rate.")
    return Section(title, caption, lr_claims(runs, varying, base_lr), table=pd.DataFrame(rows))
