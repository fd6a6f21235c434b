"""The tuned comparison: each configuration at its own best learning rate (bnrepro.report.tuning), with
intervals over seeds, steps to the tuned baseline's best, and Figure 1(a)'s claims judged on it.

At one shared learning rate a comparison can favour whichever network that rate suits; at each network's own
best rate it cannot. The paper's claims are judged on both, and the glance table says which holds.
"""

from __future__ import annotations

import pandas as pd

from bnrepro.report import claims, draw
from bnrepro.report.markdown import Section, Skipped, cell, interval_cell
from bnrepro.report.names import accuracy_title
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._shared import BAND, LABELS, pinned_text
from bnrepro.report.sections.fig1a import accuracies_at, early_step
from bnrepro.report.slices import ACT, BN, LR, PREFERRED, fmt_value, reference_slice, short_name
from bnrepro.report.stats import best_of_mean, first_step_reaching, mean_interval, step_span, steps_per_run
from bnrepro.report.thresholds import CONFIDENCE, EARLY_FRACTION, FLOAT_TIE, STALL_ACC
from bnrepro.report.tuning import Tuned, tune

STEM = "tuned_test_accuracy"


def _main(tuned: list[Tuned], bn: str) -> Tuned | None:
    """The tuned configuration with BN mode `bn` and otherwise the paper's settings (sigmoid) when present."""
    mine = [t for t in tuned if t.values.get(BN) == bn]
    return next((t for t in mine if t.values.get(ACT, PREFERRED[ACT]) == PREFERRED[ACT]), mine[0] if mine else None)


@section(order=12, stems=(STEM,), axes=True)
def tuned_comparison(ctx: Context) -> Section | Skipped:
    title = "Tuned comparison: each configuration at its own best learning rate"
    if LR not in ctx.varying or BN not in ctx.runs:
        return Skipped(title, "the run set has a single learning rate: no learning-rate sweep to tune on")
    axes = [k for k in (BN, ACT) if k in ctx.varying]
    runs, pinned = reference_slice(ctx.runs, ctx.varying, [LR, *axes], ctx.base_lr)
    tuned = tune(runs, axes)
    base, bn = _main(tuned, "none"), _main(tuned, "before")
    if base is None or bn is None:
        return Skipped(title, "no learning rate at which every seed trained, with and without BN")
    target = best_of_mean(ctx.metrics, base.runs)
    rows = []
    for t in tuned:
        final, best = t.runs["final_test_acc"].astype(float), t.runs["best_test_acc"].astype(float)
        per_seed = steps_per_run(ctx.metrics, t.runs, target) if target is not None else []
        mean_step = first_step_reaching(ctx.metrics, t.runs, target) if target is not None else None
        names = {short_name(k, axes): fmt_value(v) for k, v in t.values.items()}
        rows.append({**names, "best lr": fmt_value(t.lr),
                     "x base": f"{t.lr / ctx.base_lr:g}x" if ctx.base_lr else "–", "n": len(t.runs),
                     "final mean (%)": cell(final.mean()), f"final {CONFIDENCE:.0%} CI (%)": interval_cell(
                         mean_interval(final)),
                     "best mean (%)": cell(best.mean()), f"best {CONFIDENCE:.0%} CI (%)": interval_cell(
                         mean_interval(best)),
                     "steps to target (seed mean)": "never" if mean_step is None else str(mean_step),
                     "steps to target (per seed)": step_span(per_seed) if per_seed else "–"})
    step = early_step(ctx.metrics, base.runs, bn.runs)
    at_step = [accuracies_at(ctx.metrics, g.runs, step) if step is not None else [] for g in (base, bn)]
    comparison = f"tuned lr: no BN {base.lr:g}, BN {bn.lr:g}"
    target_claim = "BN reaches the baseline's best accuracy in fewer steps"
    found = [claims.bn_ends_higher(base.runs["final_test_acc"].astype(float).tolist(),
                                   bn.runs["final_test_acc"].astype(float).tolist(), comparison),
             claims.bn_trains_faster(step, *at_step, EARLY_FRACTION, comparison),
             claims.fewer_steps("BN", "Baseline", steps_per_run(ctx.metrics, bn.runs, target),
                                steps_per_run(ctx.metrics, base.runs, target), target_claim, comparison)]
    groups = [(t.values[BN], f"{LABELS.get(t.values[BN], 'bn=' + str(t.values[BN]))}, lr {t.lr:g}", t.runs)
              for t in (base, bn)]
    files = ctx.save(draw.accuracy_figure(ctx.metrics, groups, f"{accuracy_title(runs)}, each at its best lr"),
                     STEM)
    rankings = [f"{' '.join(f'{k}={fmt_value(v)}' for k, v in t.values.items())}: "
                + ", ".join(f"lr {lr:g} {cell(acc)}%" for lr, acc in t.ranking) for t in tuned]
    caption = (f"Each configuration at its own best learning rate: among the rates at which every seed trained "
               f"(none diverged, none stalled below {STALL_ACC:.0%}), the one with the highest seed-mean final "
               f"test accuracy (a tie closer than {FLOAT_TIE:g} goes to the smaller rate; bnrepro.report.tuning). "
               f"CI: the {CONFIDENCE:.0%} Student t-interval of the mean over seeds. Target: the tuned baseline's "
               f"best seed-mean test accuracy ({cell(target)}%); steps to it from the seed-mean curve and from each "
               "seed's own curve (min-max over seeds). The same seeds pick the rate and measure it, so every tuned "
               f"mean is slightly optimistic, alike for all configurations. {BAND}{pinned_text(pinned)}")
    tried = sorted(runs[LR].astype(float).unique())
    edges = [f"{' '.join(f'{k}={fmt_value(v)}' for k, v in t.values.items())}: its best rate {t.lr:g} is the "
             f"{'lowest' if t.lr == tried[0] else 'highest'} tried, so its own optimum may lie beyond the sweep"
             for t in tuned if t.lr in (tried[0], tried[-1])]
    return Section(title, caption, found, files, table=pd.DataFrame(rows),
                   notes=["seed-mean final accuracy per trained rate: " + "; ".join(rankings), *edges])
