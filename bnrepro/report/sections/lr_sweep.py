"""Learning-rate sweep: final and best accuracy per learning rate, and Sec. 4.2's divergence claims."""

from __future__ import annotations

from bnrepro.report import draw
from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import accuracy_title
from bnrepro.report.outcomes import lr_claims
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._shared import pinned_text
from bnrepro.report.slices import BN, LR, reference_slice

STEM = "lr_sweep"


@section(order=30, stems=(STEM,), axes=True)
def lr_sweep(ctx: Context) -> Section | Skipped:
    title = "Learning-rate sweep"
    if LR not in ctx.varying:
        return Skipped(title, "the run set has a single learning rate")
    runs, pinned = reference_slice(ctx.runs, ctx.varying, [LR, BN], ctx.base_lr)
    files = ctx.save(draw.lr_figure(runs, ctx.base_lr, f"{accuracy_title(runs)} vs learning rate"), STEM)
    caption = ("Final (left) and best (right) test accuracy vs learning rate (log x; second tick line: "
               "multiple of the base lr). Points: mean over the runs that did not diverge; bars: min-max; "
               f"x at the bottom: diverged runs.{pinned_text(pinned)}")
    return Section(title, caption, lr_claims(ctx.runs, ctx.varying, ctx.base_lr), files)
