"""Gradient norms of BN's gamma and beta per layer: a picture of training, with no claim attached.

Sec. 3.3's claim, scale invariance, needs the trained weights, which run folders do not keep; it is tested on
trained networks by scripts/scale_invariance.py (reports/scale_invariance/) and tests/test_scale_invariance.py.
"""

from __future__ import annotations

from bnrepro.report import draw
from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import model_name
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._shared import BAND, pinned_text
from bnrepro.report.slices import BN, matches, reference_slice
from bnrepro.report.stats import GRAD_COLUMN, evaluations

STEM = "grad_norms"


@section(order=50, stems=(STEM,), regression=True)
def grad_norms(ctx: Context) -> Section | Skipped:
    title = "Gradient norms of BN's gamma and beta"
    runs, pinned = reference_slice(ctx.runs, ctx.varying, [BN], ctx.base_lr)
    runs = runs[matches(runs, BN, "before")]
    # the claim is about the last evaluation, and the figure shows the same points; probe rows measure other things
    metrics = evaluations(ctx.metrics)
    rows = metrics[metrics["run"].isin(runs["run"])].dropna(axis=1, how="all")
    columns: dict[str, list[str]] = {}
    for c in rows.columns:
        if m := GRAD_COLUMN.match(c):
            columns.setdefault(m["param"], []).append(c)
    if runs.empty or not columns:
        return Skipped(title, "no bn=before runs with grad_norm/<param>/<layer> columns in this slice")
    files = ctx.save(draw.grad_norm_figure(metrics, runs, columns, f"{model_name(runs)} with BN"), STEM)
    caption = ("L2 norm of the loss gradient w.r.t. each BN layer's gamma and beta (log y). The paper has "
               "no such figure; Sec. 3.3's scale invariance is tested on trained networks in "
               "reports/scale_invariance/report.md. "
               f"{BAND}{pinned_text(pinned)}")
    return Section(title, caption, [], files)
