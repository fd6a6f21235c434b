"""BN placement (none, before, after the nonlinearity) per activation, and Sec. 4.2's sigmoid claim."""

from __future__ import annotations

import pandas as pd

from bnrepro.report import claims, draw
from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import accuracy_title
from bnrepro.report.outcomes import sigmoid_claim
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._shared import BAND, pinned_text
from bnrepro.report.slices import ACT, BN, LR, matches, order_key, reference_slice
from bnrepro.report.stats import difference, stat
from bnrepro.report.thresholds import CONFIDENCE
from bnrepro.report.tuning import tune

STEM = "bn_placement"


def _finals(runs: pd.DataFrame, bn: str, act: str) -> pd.Series:
    return runs[matches(runs, BN, bn) & matches(runs, ACT, act)]["final_test_acc"].dropna().astype(float)


def _tuned_groups(ctx: Context) -> tuple[pd.DataFrame, dict[tuple[str, str], float]]:
    """Each (bn, activation) at its own best learning rate (bnrepro.report.tuning): its runs, and the rates."""
    runs, _ = reference_slice(ctx.runs, ctx.varying, [BN, ACT, LR], ctx.base_lr)
    tuned = tune(runs, [k for k in (BN, ACT) if k in runs])
    picked = {(t.values.get(BN), t.values.get(ACT)): t for t in tuned}
    rates = {key: t.lr for key, t in picked.items()}
    chosen = pd.concat([t.runs for t in picked.values()]) if picked else runs.iloc[:0]
    return chosen, rates


@section(order=40, stems=(STEM,), axes=True)
def bn_placement(ctx: Context) -> Section | Skipped:
    title = "BN placement and activation"
    runs, pinned = reference_slice(ctx.runs, ctx.varying, [BN, ACT], ctx.base_lr)
    modes = sorted(runs[BN].unique(), key=lambda b: order_key(BN, b)) if BN in runs else []
    acts = list(dict.fromkeys(runs[ACT])) if ACT in runs else []
    if "after" not in modes and len(acts) < 2:
        return Skipped(title, "no bn=after runs and a single activation: Figure 1(a) covers none vs before")
    # with a learning-rate sweep in the run set, each configuration is drawn and compared at its own best rate: one
    # shared rate suits some placements and makes others diverge
    tuned = LR in ctx.varying
    rates: dict[tuple[str, str], float] = {}
    untrained = []
    if tuned:
        every = {(bn, act) for bn in modes for act in acts
                 if len(runs[matches(runs, BN, bn) & matches(runs, ACT, act)])}
        runs, rates = _tuned_groups(ctx)
        untrained = [f"{act}, bn={bn}: no learning rate at which every seed trained; left out of the figure"
                     for bn, act in sorted(every - set(rates), key=lambda k: (k[1], order_key(BN, k[0])))]

    def label(bn: str, act: str) -> str:
        return f"bn={bn}" + (f", lr {rates[(bn, act)]:g}" if (bn, act) in rates else "")

    panels = [(f"activation={act}", groups) for act in acts
              if (groups := [(bn, label(bn, act), g) for bn in modes
                             if len(g := runs[matches(runs, BN, bn) & matches(runs, ACT, act)])])]
    if not panels:
        return Skipped(title, "no configuration trained on every seed at any learning rate")
    files = ctx.save(draw.panels_figure(ctx.metrics, panels, accuracy_title(runs)), STEM)
    found = [c for c in [sigmoid_claim(ctx.runs, ctx.varying, ctx.base_lr)] if c is not None] if len(acts) > 1 else []
    notes = [f"{act}: mean final accuracy " + ", ".join(
        f"{label(bn, act)} {claims.pct(stat(_finals(runs, bn, act)).mean)}" for bn in modes) for act in acts]
    for act in acts:  # the paper has no claim on placement; its numbers with their intervals, for the record
        if "before" in modes and "after" in modes:
            iv = difference(_finals(runs, "after", act), _finals(runs, "before", act))
            if iv is not None:
                notes.append(f"{act}: bn=after - bn=before final accuracy {iv.points()} points "
                             f"({CONFIDENCE:.0%} Welch interval; {'contains' if iv.side() == 'inside' else 'excludes'}"
                             " 0)")
    if "sigmoid" in acts and len(acts) > 1:
        other = next(a for a in acts if a != "sigmoid")
        for bn in ("none", "before"):
            if bn in modes:
                a, b = stat(_finals(runs, bn, other)), stat(_finals(runs, bn, "sigmoid"))
                if a.n and b.n:
                    gap = 100 * (a.mean - b.mean)
                    notes.append(f"bn={bn}: {other} - sigmoid mean final accuracy {gap:+.2f} points")
    at = ("each configuration at its own best learning rate (bnrepro.report.tuning: the highest seed-mean final "
          "accuracy among the rates where every seed trained)" if tuned else "one shared learning rate")
    caption = ("Test accuracy vs step per BN placement (none, before the nonlinearity as in the paper, after "
               f"it), one panel per activation, {at}. The paper only uses 'before' (Sec. 3.2), so 'after' has no "
               f"paper number to check against. {BAND}{pinned_text(pinned)}")
    return Section(title, caption, found, files, notes=[*untrained, *notes])
