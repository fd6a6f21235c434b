"""Sec. 4.2 in miniature (experiment=sec42, experiment=sec42_ablation): Figure 2's curves, Figure 3's table and
the ablation of Sec. 4.2.1's changes, over runs named by their recipe (the config's `variant`).

Every row is one named configuration over its seeds. The target is the Baseline's best accuracy: the highest
seed-mean test accuracy of the Baseline's runs, as the paper's target is Inception's best (72.2%). A row reaches
it at the first evaluation where its own seed-mean curve does; per seed, at each seed's own first evaluation.
"""

from __future__ import annotations

import math

import pandas as pd

from bnrepro.report import claims, draw
from bnrepro.report.markdown import Section, Skipped, cell, interval_cell
from bnrepro.report.names import accuracy_title
from bnrepro.report.outcomes import outcome
from bnrepro.report.sections import Context, section
from bnrepro.report.slices import BN, LR, fmt_value, short_name
from bnrepro.report.stats import best_of_mean, difference, first_step_reaching, mean_interval, step_span, steps_per_run
from bnrepro.report.thresholds import CONFIDENCE

VARIANT = "variant"
BASELINE, BN_BASELINE, X5, X30, X5_SIGMOID, SIGMOID = (
    "Baseline", "BN-Baseline", "BN-x5", "BN-x30", "BN-x5-Sigmoid", "Sigmoid")
FIGURE2 = (BASELINE, BN_BASELINE, X5, X30, X5_SIGMOID, SIGMOID)
ABLATION_PREFIX = f"{X5} + "  # conf/recipe/bn_x5_with_*.yaml: BN-x5 with one Baseline setting put back
# Figure 3 of the paper: steps to Inception's best (72.2%) and each network's own best accuracy
PAPER = {BASELINE: ("31.0M", "72.2"), BN_BASELINE: ("13.3M", "72.7"), X5: ("2.1M", "73.0"),
         X30: ("2.7M", "74.8"), X5_SIGMOID: ("never", "69.8"), SIGMOID: ("never", "never trained")}
FIG2_STEM = "sec42_fig2_test_accuracy"
WHERE, QUOTE = "Sec. 4.2, Fig. 2 and 3", claims.QUOTES["steps"]
CI = f"{CONFIDENCE:.0%} CI"


def _named(ctx: Context, names: list[str]) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The runs of each named configuration present, and a note for each name whose runs span several
    settings (a sweep over them, e.g. the Baseline's lr tuning) and so are no one configuration."""
    found, notes = {}, []
    if VARIANT not in ctx.runs:
        return found, notes
    for name in names:
        group = ctx.runs[ctx.runs[VARIANT] == name]
        if group.empty:
            continue
        spread = [k for k in ctx.varying if group[k].map(fmt_value).nunique() > 1]
        if spread:
            notes.append(f"{name}: its runs differ in {', '.join(spread)}, so they are no one configuration "
                         "and are left out")
            continue
        found[name] = group
    return found, notes


def _ablation_names(ctx: Context) -> list[str]:
    if VARIANT not in ctx.runs:
        return []
    return sorted({v for v in ctx.runs[VARIANT].dropna() if str(v).startswith(ABLATION_PREFIX)})


def _bests(group: pd.DataFrame) -> list[float]:
    return group["best_test_acc"].dropna().astype(float).tolist()


def _finals(group: pd.DataFrame) -> list[float]:
    return group["final_test_acc"].dropna().astype(float).tolist()


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _target(ctx: Context, found: dict[str, pd.DataFrame]) -> float | None:
    return best_of_mean(ctx.metrics, found[BASELINE]) if BASELINE in found else None


def _steps(ctx: Context, group: pd.DataFrame, target: float | None) -> tuple[int | None, list[int | None]]:
    if target is None:
        return None, []
    return first_step_reaching(ctx.metrics, group, target), steps_per_run(ctx.metrics, group, target)


def _target_text(target: float | None) -> str:
    return "n/a (no Baseline runs)" if target is None else f"{cell(target)}%"


def _applies(ctx: Context, names: list[str]) -> bool:
    """Whether any run carries one of these configuration names: else a section has nothing to say."""
    return VARIANT in ctx.runs and bool(set(ctx.runs[VARIANT].dropna()) & set(names))


def _figure2_runs(ctx: Context, title: str) -> tuple[dict[str, pd.DataFrame], list[str]] | Skipped | None:
    """Figure 2's configurations present and the notes on the ones left out; None for a run set without any of
    them, Skipped when every one present spans several settings."""
    if not _applies(ctx, list(FIGURE2)):
        return None
    found, notes = _named(ctx, list(FIGURE2))
    return (found, notes) if found else Skipped(title, "; ".join(notes))


@section(order=45, stems=(FIG2_STEM,))
def sec42_figure2(ctx: Context) -> Section | Skipped | None:
    title = "Sec. 4.2, Figure 2: test accuracy of the Baseline, BN-Baseline, BN-x5, BN-x30 and the sigmoid pair"
    if not isinstance(picked := _figure2_runs(ctx, title), tuple):
        return picked
    found, notes = picked
    target = _target(ctx, found)
    groups = [(str(g[BN].iloc[0]) if BN in g else "none", name, g) for name, g in found.items()]
    zoom = math.floor(100 * target - 6) / 100 if target is not None else None
    runs = pd.concat(list(found.values()))
    fig = draw.variants_figure(ctx.metrics, groups, accuracy_title(runs), zoom)
    caption = ("Test accuracy vs training step for each of Sec. 4.2's configurations, as the paper's Figure 2 plots "
               "validation accuracy (solid: with BN, dashed: without). Lines: mean over seeds; band: min-max over "
               f"seeds; n: seeds. Right: the same above {cell(zoom)}%, 6 points below the Baseline's best "
               f"({_target_text(target)}), the target of the table below." if zoom is not None else "")
    return Section(title, caption, files=ctx.save(fig, FIG2_STEM), notes=notes)


def _figure3_claims(ctx: Context, found: dict[str, pd.DataFrame], per_seed: dict[str, list[int | None]],
                    target: float | None) -> list[claims.Claim]:
    def steps(fast: str, slow: str, claim: str) -> claims.Claim:
        if target is None:
            return claims.untestable(WHERE, QUOTE, claim, "Baseline runs, so no target")
        if fast not in per_seed or slow not in per_seed:
            return claims.untestable(WHERE, QUOTE, claim, f"{fast if fast not in per_seed else slow} runs")
        return claims.fewer_steps(fast, slow, per_seed[fast], per_seed[slow], claim)

    def get(name: str) -> pd.DataFrame:
        return found.get(name, ctx.runs.iloc[:0])

    out = [steps(BN_BASELINE, BASELINE, "BN-Baseline reaches the Baseline's best accuracy in fewer steps"),
           steps(X5, BN_BASELINE, "BN-x5 reaches it in fewer steps than BN-Baseline"),
           claims.joint(WHERE, QUOTE, "BN-x30 reaches the target later than BN-x5 but ends at a higher best accuracy",
                        [("later", steps(X5, X30, "BN-x5 reaches the target before BN-x30")),
                         ("higher", claims.x30_ends_highest(_bests(get(X30)), _bests(get(X5))))])]
    base_lr = float(found[BASELINE][LR].iloc[0]) if BASELINE in found and LR in found[BASELINE] else None
    if X5_SIGMOID in found and SIGMOID in found and base_lr is not None:
        lr = float(found[X5_SIGMOID][LR].iloc[0])
        out.append(claims.sigmoid_trains_only_with_bn(outcome(found[X5_SIGMOID], lr), outcome(found[SIGMOID], lr),
                                                      base_lr))
    else:
        out.append(claims.untestable("Sec. 4.2", claims.QUOTES["sigmoid"], "a sigmoid network trains with BN, and "
                                     "without BN it does not", "BN-x5-Sigmoid and Sigmoid runs, and a Baseline"))
    out.append(claims.ends_higher(WHERE, QUOTE, BN_BASELINE, BASELINE, _finals(get(BN_BASELINE)),
                                  _finals(get(BASELINE)), "BN-Baseline ends above the Baseline"))
    return out


@section(order=72)
def sec42_figure3(ctx: Context) -> Section | Skipped | None:
    title = "Sec. 4.2, Figure 3: steps to the Baseline's best accuracy, and each configuration's best"
    if not isinstance(picked := _figure2_runs(ctx, title), tuple):
        return picked
    found, notes = picked
    target = _target(ctx, found)
    reached = {name: _steps(ctx, g, target) for name, g in found.items()}
    base_step = reached.get(BASELINE, (None, []))[0]
    rows = []
    for name, group in found.items():
        step, seeds = reached[name]
        rows.append({"configuration": name, "bn": group[BN].iloc[0] if BN in group else "–",
                     "lr": fmt_value(group[LR].iloc[0]) if LR in group else "–", "n": len(group),
                     "steps to target": "never" if step is None else str(step),
                     "per seed": step_span(seeds) if seeds else "–",
                     "vs Baseline": f"{base_step / step:.1f}x fewer" if step and base_step and name != BASELINE
                     else "–",
                     "best mean (%)": cell(_mean(_bests(group))),
                     f"best {CI} (%)": interval_cell(mean_interval(_bests(group))),
                     "final mean (%)": cell(_mean(_finals(group))),
                     "diverged": int((group["status"] == "diverged").sum()),
                     "paper: steps to 72.2%": PAPER[name][0], "paper: best (%)": PAPER[name][1]})
    caption = (f"Target: the Baseline's best accuracy, the highest seed-mean test accuracy of its runs "
               f"({_target_text(target)}), as the paper's is Inception's best (72.2%). Steps to target: the first "
               "evaluation at which the row's seed-mean test accuracy reaches it (resolution train.eval_every); per "
               "seed: each seed's own first evaluation at the target, min-max over seeds (never: a seed that does "
               "not reach it). vs Baseline: the Baseline's steps / the row's. Best: each seed's highest evaluated "
               f"test accuracy, mean and {CI} (Student's t over seeds); final: at the last step. Paper: Figure 3 "
               "(ImageNet, Inception, one run each).")
    return Section(title, caption, _figure3_claims(ctx, found, {k: v[1] for k, v in reached.items()}, target),
                   table=pd.DataFrame(rows), notes=notes)


def _versus(row: list[int | None], reference: list[int | None]) -> str:
    """Per-seed steps to target against the reference's: later or sooner only when the seed ranges do not
    overlap (a seed that never reaches it counts as infinitely late)."""
    if not row or not reference:
        return "–"
    a, b = ([math.inf if s is None else s for s in steps] for steps in (row, reference))
    return "later" if min(a) > max(b) else "sooner" if max(a) < min(b) else "ranges overlap"


@section(order=76)
def sec42_ablation(ctx: Context) -> Section | Skipped | None:
    title = "Sec. 4.2.1's changes one at a time: BN-x5 with one Baseline setting put back"
    names = _ablation_names(ctx)
    if not names and not _applies(ctx, [X5]):
        return None
    found, notes = _named(ctx, [BASELINE, X5, *names])
    if X5 not in found or not any(n in found for n in names):
        return Skipped(title, "needs BN-x5 runs and runs of BN-x5 with a change put back (experiment=sec42 and "
                       "experiment=sec42_ablation, reported together)")
    target = _target(ctx, found)
    reached = {name: _steps(ctx, found[name], target) for name in [X5, *names] if name in found}
    ref_steps = reached[X5][1]
    rows = []
    for name, (step, seeds) in reached.items():
        group = found[name]
        delta = difference(_bests(group), _bests(found[X5])) if name != X5 else None
        changed = {short_name(k, ctx.varying): fmt_value(group[k].iloc[0]) for k in ctx.varying
                   if fmt_value(group[k].iloc[0]) != fmt_value(found[X5][k].iloc[0])}
        rows.append({"configuration": name,
                     "setting put back": ", ".join(f"{k}={v}" for k, v in changed.items()) or "–", "n": len(group),
                     "steps to target": "never" if step is None else str(step) if target is not None else "–",
                     "per seed": step_span(seeds) if seeds else "–",
                     "steps vs BN-x5": _versus(seeds, ref_steps) if name != X5 else "–",
                     "best mean (%)": cell(_mean(_bests(group))),
                     f"best {CI} (%)": interval_cell(mean_interval(_bests(group))),
                     "best - BN-x5 (points)": delta.points() if delta is not None else "–",
                     "best vs BN-x5": "–" if delta is None else {"below": "costs", "above": "gains",
                                                                  "inside": "within seed spread"}[delta.side()]})
    caption = ("Each row puts back one of the Baseline's settings that Sec. 4.2.1 changes for BN-x5, everything "
               f"else as BN-x5; the paper reports only all the changes together. Target: the Baseline's best "
               f"accuracy ({_target_text(target)}), as in Figure 3's table. Steps vs BN-x5: later or sooner only "
               "when the per-seed ranges do not overlap. best - BN-x5: the difference of the seed means of each "
               f"seed's best accuracy, with its {CI} (Welch's t); costs / gains only when the interval excludes 0.")
    return Section(title, caption, table=pd.DataFrame(rows), notes=notes)


def chosen_lr(rows: list[dict]) -> float | None:
    """The Baseline's rate by the written criterion: the highest seed-mean best test accuracy among the rates at
    which every seed trained (no divergence, no stall); rows are sec42_tuning's table rows."""
    trained = [r for r in rows if r["trained"] == r["n"] and r["best mean"] is not None]
    return max(trained, key=lambda r: r["best mean"])["lr"] if trained else None


@section(order=74)
def sec42_tuning(ctx: Context) -> Section | None:
    """Only for a run set of Baseline runs that differ in optim.lr alone (experiment=sec42_tuning)."""
    title = "The Baseline's learning rate (experiment=sec42_tuning)"
    if VARIANT not in ctx.runs or set(ctx.runs[VARIANT]) != {BASELINE} or ctx.varying != [LR]:
        return None
    rows = []
    for lr in sorted(ctx.runs[LR].astype(float).unique()):
        group = ctx.runs[ctx.runs[LR].astype(float) == lr]
        bests = _bests(group)
        ended = outcome(group, lr)
        rows.append({"lr": lr, "n": len(group), "trained": ended.n - ended.failed,
                     "best mean": _mean(bests), "best ci": mean_interval(bests),
                     "final mean": _mean(_finals(group))})
    chosen = chosen_lr(rows)
    table = pd.DataFrame([{"lr": fmt_value(r["lr"]), "n": r["n"], "trained": r["trained"],
                           "best mean (%)": cell(r["best mean"]), f"best {CI} (%)": interval_cell(r["best ci"]),
                           "final mean (%)": cell(r["final mean"]),
                           "chosen": "yes" if chosen is not None and r["lr"] == chosen else ""} for r in rows])
    caption = ("The Baseline alone (no BN) at each rate; trained: seeds that neither diverged nor stalled. Chosen: "
               "the highest seed-mean best test accuracy among the rates where every seed trained, before any BN "
               "run, so that BN-x5 and BN-x30 are 5x and 30x a rate chosen for the network without BN. "
               + ("Chosen rate: " + fmt_value(chosen) + "." if chosen is not None else "No rate trained on every "
                  "seed."))
    notes = [] if chosen is None or min(r["lr"] for r in rows) < chosen < max(r["lr"] for r in rows) else \
        [f"the chosen rate {fmt_value(chosen)} is at the edge of the rates tried: a wider sweep may find a better one"]
    return Section(title, caption, table=table, notes=notes)
