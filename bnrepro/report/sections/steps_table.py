"""Steps to reach the baseline's best accuracy (Sec. 4.2's table, small) and the speed claims it checks."""

from __future__ import annotations

import pandas as pd

from bnrepro.report import claims
from bnrepro.report.markdown import Section, Skipped, cell
from bnrepro.report.sections import Context, section
from bnrepro.report.slices import ACT, BN, LR, fmt_value, matches, reference_slice
from bnrepro.report.stats import best_of_mean, first_step_reaching, step_span, steps_per_run

# Sec. 4.2: steps to reach Inception's best accuracy (72.2%), and each model's own best
PAPER_STEPS = {"Baseline": "31.0M (72.2%)", "BN": "13.3M (72.7%)", "BN-x5": "2.1M (73.0%)",
               "BN-x30": "2.7M (74.8%)"}
STEP_ROWS = [("Baseline", "none", 1), ("BN", "before", 1), ("BN-x5", "before", 5), ("BN-x30", "before", 30)]


def _step_groups(runs: pd.DataFrame, base_lr: float) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The table's rows that the run set has, by name, and a line for each main row it lacks."""
    acts = list(dict.fromkeys(runs[ACT])) if ACT in runs else [None]
    ref_act = "sigmoid" if "sigmoid" in acts else acts[0]
    found, missing = {}, []
    for act in [ref_act, *(a for a in acts if a != ref_act)]:
        for name, bn, mult in STEP_ROWS:
            label = name if act == ref_act else f"{name}-{act}"
            mask = matches(runs, BN, bn) & matches(runs, LR, mult * base_lr)
            group = runs[mask & matches(runs, ACT, act)] if act is not None else runs[mask]
            if len(group):
                found[label] = group
            elif act == ref_act:
                missing.append(f"{label}: no runs with bn={bn} at lr={mult * base_lr:g} ({mult}x)")
    return found, missing


def _steps_claims(per_seed: dict[str, list[int | None]], best: dict[str, list[float]],
                  target: float | None, base_step: int | None, comparison: str) -> list[claims.Claim]:
    where, quote = "Sec. 4.2, table", claims.QUOTES["steps"]
    checks = (("BN", "Baseline", "BN reaches the baseline's best accuracy in fewer steps"),
              ("BN-x5", "BN", "BN-x5 reaches the baseline's best accuracy in fewer steps than BN"))
    out = []
    for name, slow, claim in checks:
        if target is None:
            out.append(claims.untestable(where, quote, claim, "baseline runs (bn=none at the base lr)", comparison))
        elif base_step == 0:  # a target met before training says nothing about speed
            out.append(claims.untestable(where, quote, claim, f"target worth racing to: the baseline never beat its "
                                         f"untrained step-0 accuracy ({claims.pct(target)})", comparison))
        elif name in per_seed and slow in per_seed:
            out.append(claims.fewer_steps(name, slow, per_seed[name], per_seed[slow], claim, comparison))
        else:
            out.append(claims.untestable(where, quote, claim, f"{name} and {slow} rows", comparison))
    out.append(claims.x30_ends_highest(best.get("BN-x30", []), best.get("BN-x5", [])))
    return out


@section(order=70, axes=True)
def steps_table(ctx: Context) -> Section | Skipped:
    title = "Steps to reach the baseline's best accuracy (Sec. 4.2's table, small)"
    base_lr, metrics = ctx.base_lr, ctx.metrics
    if base_lr is None:
        return Skipped(title, "no learning rate is recorded, so no baseline can be defined")
    runs, pinned = reference_slice(ctx.runs, ctx.varying, [BN, LR, ACT], base_lr)
    found, missing = _step_groups(runs, base_lr)
    base = found.get("Baseline")
    target = best_of_mean(metrics, base) if base is not None else None
    reached = {k: None if target is None else first_step_reaching(metrics, g, target)
               for k, g in found.items()}
    per_seed = {k: [] if target is None else steps_per_run(metrics, g, target) for k, g in found.items()}
    best = {k: best_of_mean(metrics, g) for k, g in found.items()}
    rows = []
    for label, group in found.items():
        step, base_step = reached[label], reached.get("Baseline")
        rows.append({"row": label, "bn": group[BN].iloc[0], "lr": fmt_value(group[LR].iloc[0]),
                     "activation": group[ACT].iloc[0] if ACT in group else "–", "n": len(group),
                     "best seed-mean acc (%)": cell(best[label]),
                     "steps to target": "never" if step is None else str(step),
                     "per seed": step_span(per_seed[label]) if per_seed[label] else "–",
                     "speed-up": f"{base_step / step:.1f}x" if step and base_step else "–",
                     "paper": PAPER_STEPS.get(label, "–")})
    target_text = f"{cell(target)}%" if target is not None else "n/a: no baseline runs"
    caption = (f"Target: the baseline's best accuracy, i.e. the highest seed-mean test accuracy of bn=none "
               f"at the base lr {base_lr:g} ({target_text}). Steps to target: the first evaluation step at "
               "which a row's seed-mean test accuracy reaches it (only steps that every seed reports; "
               "resolution = train.eval_every); per seed: each seed's own first step (min-max over seeds; "
               "never: a seed that does not reach it). Speed-up: baseline steps / row steps. Paper: steps to "
               "Inception's best (72.2%) and each model's own best. The paper's activation swap went the "
               "other way (its nets use ReLU; BN-x5-Sigmoid reached 69.8%, never 72.2%); ours use sigmoid, "
               "so swap rows carry the other activation's name.")
    if pinned:
        caption += " Other settings pinned to: " + ", ".join(f"{k}={fmt_value(v)}" for k, v in pinned.items())
    bests = {k: g["best_test_acc"].dropna().astype(float).tolist() for k, g in found.items()}
    comparison = f"shared lr {base_lr:g}"
    return Section(title, caption, _steps_claims(per_seed, bests, target, reached.get("Baseline"), comparison),
                   table=pd.DataFrame(rows), notes=[f"missing row {m}" for m in missing])
