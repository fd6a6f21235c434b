"""Gradient norms of BN's gamma and beta per layer, and Sec. 3.3's "gradients stay well scaled" claim."""

from __future__ import annotations

import numpy as np

from bnrepro.report import claims, draw
from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import model_name
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._shared import BAND, pinned_text
from bnrepro.report.slices import BN, matches, reference_slice
from bnrepro.report.stats import GRAD_COLUMN, evaluations

STEM = "grad_norms"


@section(order=50, stems=(STEM,))
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
    gamma = columns.get("gamma", [])
    trained = rows[rows["step"] > 0]  # step 0 has no gradient yet, by design
    finite = bool(np.isfinite(trained[gamma].to_numpy(dtype=float)).all())
    last = trained.groupby("step")[gamma].mean().dropna().tail(1)
    ratio = float(last.max(axis=1).iloc[0] / last.min(axis=1).iloc[0]) if len(last) else None
    caption = ("L2 norm of the loss gradient w.r.t. each BN layer's gamma and beta (log y). The paper has "
               "no such figure; it argues BN keeps gradients well scaled (Sec. 3.3). "
               f"{BAND}{pinned_text(pinned)}")
    return Section(title, caption, [claims.gradients_well_scaled(ratio, finite)], files)
