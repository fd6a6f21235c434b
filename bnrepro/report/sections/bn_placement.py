"""BN placement (none, before, after the nonlinearity) per activation, and Sec. 4.2's sigmoid-vs-ReLU claim."""

from __future__ import annotations

import pandas as pd

from bnrepro.report import claims, draw
from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import accuracy_title
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._shared import BAND, pinned_text
from bnrepro.report.slices import ACT, BN, matches, order_key, reference_slice
from bnrepro.report.stats import stat

STEM = "bn_placement"


def _final_mean(runs: pd.DataFrame, bn: str, act: str) -> float | None:
    s = stat(runs[matches(runs, BN, bn) & matches(runs, ACT, act)]["final_test_acc"])
    return s.mean if s.n else None


def _gap(runs: pd.DataFrame, bn: str, act: str, other: str) -> float | None:
    a, b = _final_mean(runs, bn, act), _final_mean(runs, bn, other)
    return None if a is None or b is None else abs(a - b)


@section(order=40, stems=(STEM,))
def bn_placement(ctx: Context) -> Section | Skipped:
    title = "BN placement and activation"
    runs, pinned = reference_slice(ctx.runs, ctx.varying, [BN, ACT], ctx.base_lr)
    modes = sorted(runs[BN].unique(), key=lambda b: order_key(BN, b)) if BN in runs else []
    acts = list(dict.fromkeys(runs[ACT])) if ACT in runs else []
    if "after" not in modes and len(acts) < 2:
        return Skipped(title, "no bn=after runs and a single activation: Figure 1(a) covers none vs before")
    panels = [(f"activation={act}", [(bn, f"bn={bn}", g) for bn in modes
                                     if len(g := runs[matches(runs, BN, bn) & matches(runs, ACT, act)])])
              for act in acts]
    files = ctx.save(draw.panels_figure(ctx.metrics, panels, accuracy_title(runs)), STEM)
    found = []
    if "sigmoid" in acts and len(acts) > 1:
        other = next(a for a in acts if a != "sigmoid")
        gaps = [_gap(runs, bn, "sigmoid", other) for bn in ("before", "none")]
        found.append(claims.bn_narrows_activation_gap("sigmoid", other, *gaps))
    notes = [f"{act}: mean final accuracy " + ", ".join(
        f"bn={bn} {claims.pct(_final_mean(runs, bn, act))}" for bn in modes) for act in acts]
    caption = ("Test accuracy vs step per BN placement (none, before the nonlinearity as in the paper, after "
               "it), one panel per activation. The paper only uses 'before' (Sec. 3.2), so 'after' has no "
               f"paper number to check against. {BAND}{pinned_text(pinned)}")
    return Section(title, caption, found, files, notes=notes)
