"""Figure 1(a): test accuracy over training with and without BN, and the two claims it carries."""

from __future__ import annotations

import pandas as pd

from bnrepro.report import claims, draw
from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import accuracy_title, data_name
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._shared import BAND, absent, fig1_groups, pinned_text
from bnrepro.report.slices import BN, reference_slice
from bnrepro.report.stats import curve, stat
from bnrepro.report.thresholds import EARLY_FRACTION

STEM = "fig1a_test_accuracy"


def _early(metrics: pd.DataFrame, base: pd.DataFrame, bn: pd.DataFrame) -> tuple[int, float, float] | None:
    """(the first evaluation step at >= EARLY_FRACTION of training both report, baseline's and BN's mean)."""
    a, b = curve(metrics, base, "test_acc"), curve(metrics, bn, "test_acc")
    common = sorted(set(a.index[a["count"] == len(base)]) & set(b.index[b["count"] == len(bn)]))
    if not common:
        return None
    step = next(s for s in common if s >= EARLY_FRACTION * common[-1])
    return int(step), float(a.loc[step, "mean"]), float(b.loc[step, "mean"])


@section(order=10, stems=(STEM,))
def fig1a(ctx: Context) -> Section | Skipped:
    title = "Figure 1(a): test accuracy with and without BN"
    runs, pinned = reference_slice(ctx.runs, ctx.varying, [BN], ctx.base_lr)
    groups = fig1_groups(runs)
    if not groups:
        return Skipped(title, "no runs with bn=none or bn=before")
    files = ctx.save(draw.accuracy_figure(ctx.metrics, groups, accuracy_title(runs)), STEM)
    by_bn = {bn: g for bn, _, g in groups}
    base, bn = by_bn.get("none", runs.iloc[:0]), by_bn.get("before", runs.iloc[:0])
    early = _early(ctx.metrics, base, bn) if len(base) and len(bn) else None
    step, acc_base, acc_bn = early or (None, None, None)
    found = [claims.bn_ends_higher(stat(base["final_test_acc"]), stat(bn["final_test_acc"])),
             claims.bn_trains_faster(step, acc_base, acc_bn)]
    caption = (f"Test accuracy on the {data_name(runs)} test set vs training step, as in the paper's Figure 1(a) "
               f"(y from 0.7, widened only if a curve ends lower). {BAND}{pinned_text(pinned)}")
    return Section(title, caption, found, files, notes=absent(groups))
