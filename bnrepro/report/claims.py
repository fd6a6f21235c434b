"""The paper's claims, each checked against numbers computed from this run set.

A verdict is never asserted: every function gets the measured numbers, states them, and says
"reproduced" only when they point the way the paper's do; missing runs make a claim untestable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bnrepro.report.stats import Drift, Stat
from bnrepro.report.thresholds import EARLY_FRACTION, FLOAT_TIE, GRAD_NORM_RATIO, HIGH_LR_FROM, HIGH_LR_TO, STABLE_RATIO

REPRODUCED, NOT_REPRODUCED, UNTESTABLE = "reproduced", "not reproduced", "not testable with these runs"
PARTLY = "partly reproduced"


@dataclass
class Claim:
    where: str  # the paper's figure or section
    paper: str  # what the paper says, with its numbers
    found: str  # what this run set shows, with its numbers
    verdict: str

    def sentence(self) -> str:
        return f"Paper ({self.where}): {self.paper} Here: {self.found}: **{self.verdict}**."


def untestable(where: str, paper: str, missing: str) -> Claim:
    return Claim(where, paper, f"no {missing}", UNTESTABLE)


def verdict(ok: bool) -> str:
    return REPRODUCED if ok else NOT_REPRODUCED


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def higher(a: float, b: float) -> tuple[bool, str]:
    """Is a > b, and "a% > b%" with enough decimals that the printed numbers agree with the verdict.

    A gap below thresholds.FLOAT_TIE is float noise: a tie.
    """
    if abs(a - b) < FLOAT_TIE:
        return False, f"{100 * a:.2f}% = {100 * b:.2f}%"
    decimals = next(d for d in range(2, 6) if f"{100 * a:.{d}f}" != f"{100 * b:.{d}f}" or d == 5)
    return a > b, f"{100 * a:.{decimals}f}% {'>' if a > b else '<'} {100 * b:.{decimals}f}%"


def steps(s: int | None) -> str:
    return "never" if s is None else f"step {s}"


def bn_ends_higher(base: Stat, bn: Stat) -> Claim:
    where, paper = "Fig. 1(a)", "with BN the network ends at a higher test accuracy."
    if base.n == 0 or bn.n == 0:
        return untestable(where, paper, "finished runs " + ("without BN" if base.n == 0 else "with BN"))
    ok, text = higher(bn.mean, base.mean)
    return Claim(where, paper, f"mean final accuracy {text} (BN vs baseline)", verdict(ok))


def bn_trains_faster(step: int | None, base: float | None, bn: float | None) -> Claim:
    where, paper = "Fig. 1(a)", "BN trains faster: it is ahead early in training."
    if step is None or base is None or bn is None:
        return untestable(where, paper, "evaluation point shared by the runs with and without BN")
    ok, text = higher(bn, base)
    found = f"mean test accuracy at step {step} ({EARLY_FRACTION:.0%} of training) {text} (BN vs baseline)"
    return Claim(where, paper, found, verdict(ok))


def distribution_stable(layer: str, base: Drift | None, bn: Drift | None) -> Claim:
    where = "Fig. 1(b, c)"
    paper = (f"without BN the activation input's distribution (layer {layer}) drifts in mean and spread; "
             "with BN it stays stable.")
    if base is None or bn is None:
        return untestable(where, paper, "percentile curves " + ("without BN" if base is None else "with BN"))
    ok_mid, ok_spread = bn.median <= STABLE_RATIO * base.median, bn.spread <= STABLE_RATIO * base.spread
    found = (f"the median moved over a range of {bn.median:.2f} with BN vs {base.median:.2f} without "
             f"({_ratio(bn.median, base.median)}), the 15-85 spread over {bn.spread:.2f} vs {base.spread:.2f} "
             f"({_ratio(bn.spread, base.spread)}); stable means at most {STABLE_RATIO:g}x the baseline's drift")
    return Claim(where, paper, found, REPRODUCED if ok_mid and ok_spread else PARTLY if ok_mid or ok_spread
                 else NOT_REPRODUCED)


def _ratio(bn: float, base: float) -> str:
    return f"{bn / base:.2f}x" if base > 0 else "baseline did not move"


def bn_beats_counterparts(wins: int, pairs: int) -> Claim:
    where, paper = "Fig. 1(a), Sec. 4.2", "adding BN raises the accuracy a network reaches."
    if pairs == 0:
        return untestable(where, paper, "configuration that exists both with and without BN")
    found = f"BN's mean final accuracy is higher in {wins} of {pairs} configurations that differ only in BN"
    return Claim(where, paper, found, REPRODUCED if wins == pairs else PARTLY if wins else NOT_REPRODUCED)


def high_lr_without_bn_diverges(diverged: int, stalled: int, total: int, base_lr: float,
                                first_fail: float | None = None, bn_final: float | None = None,
                                scope: str = "") -> Claim:
    where = "Sec. 4.2"
    paper = "without BN, 5x the learning rate made the parameters reach machine infinity (diverged)."
    if total == 0:
        return untestable(where, paper, f"runs without BN at >= {HIGH_LR_FROM}x the base lr "
                          f"({HIGH_LR_FROM * base_lr:g}){scope}")
    found = (f"{diverged} of {total} runs without BN at >= {HIGH_LR_FROM}x the base lr diverged and {stalled} "
             f"stalled at chance{scope}")
    if first_fail is not None:
        found += f"; the lowest such lr is {first_fail:g} ({first_fail / base_lr:g}x)"
        if bn_final is not None and not math.isnan(bn_final):
            found += f", where BN ends at {pct(bn_final)}"
    # stalling at chance is the same failure without the overflow: partly the paper's claim
    return Claim(where, paper, found, REPRODUCED if diverged else PARTLY if stalled else NOT_REPRODUCED)


def high_lr_with_bn_trains(diverged: int, total: int, base_lr: float, scope: str = "") -> Claim:
    where, paper = "Sec. 4.2", "with BN, 5x and 30x the learning rate train (BN-x5, BN-x30)."
    multiples = f"{HIGH_LR_FROM}x-{HIGH_LR_TO}x"
    if total == 0:
        lrs = f"{HIGH_LR_FROM * base_lr:g}-{HIGH_LR_TO * base_lr:g}"
        return untestable(where, paper, f"BN runs at {multiples} the base lr ({lrs}){scope}")
    found = f"{diverged} of {total} BN runs at {multiples} the base lr diverged{scope}"
    return Claim(where, paper, found, verdict(diverged == 0))


def fewer_steps(name: str, paper: str, fast: int | None, slow: int | None, slow_name: str) -> Claim:
    """`name` reaches the baseline's best accuracy in fewer steps than `slow_name` (first-reach steps)."""
    where = "Sec. 4.2, table"
    if slow is None and fast is None:
        return Claim(where, paper, f"neither {name} nor {slow_name} reached the target", NOT_REPRODUCED)
    ok = fast is not None and (slow is None or fast < slow)
    found = f"{name} reached it at {steps(fast)}, {slow_name} at {steps(slow)}"
    return Claim(where, paper, found, verdict(ok))


def x30_ends_highest(x30: float | None, x5: float | None, noise: float = 0.0) -> Claim:
    """noise: the larger seed std of the two rows' best accuracies; a smaller gap is not a difference."""
    where, paper = "Sec. 4.2, table", "BN-x30 reaches a higher best accuracy than BN-x5 (74.8% vs 73.0%)."
    if x30 is None or x5 is None:
        return untestable(where, paper, "BN-x30 runs" if x30 is None else "BN-x5 runs")
    ok, text = higher(x30, x5)
    found = f"best seed-mean accuracy {text} (BN-x30 vs BN-x5)"
    if ok and x30 - x5 <= noise:
        return Claim(where, paper, f"{found}, a gap within the seeds' spread (std {100 * noise:.2f} points)",
                     PARTLY)
    return Claim(where, paper, found, verdict(ok))


def bn_narrows_activation_gap(act: str, other: str, gap_bn: float | None, gap_none: float | None) -> Claim:
    where = "Sec. 4.2"
    paper = ("with BN a sigmoid network trains (69.8% vs ReLU's 73.0%), without BN it never did: "
             "BN makes the choice of nonlinearity matter less.")
    if gap_bn is None or gap_none is None:
        return untestable(where, paper, f"{act} and {other} runs both with and without BN")
    ok = gap_bn < gap_none
    found = (f"the {act}-{other} gap in mean final accuracy is {100 * gap_bn:.2f} points with BN "
             f"{'<' if ok else '>='} {100 * gap_none:.2f} without")
    return Claim(where, paper, found, verdict(ok))


def gradients_well_scaled(ratio: float | None, finite: bool) -> Claim:
    where = "Sec. 3.3"
    paper = ("with BN, back-propagation through a layer is unaffected by the scale of its parameters, so "
             "gradients neither explode nor vanish across layers.")
    if ratio is None:
        return untestable(where, paper, "gamma gradient norms of BN runs")
    ok = finite and ratio <= GRAD_NORM_RATIO
    found = (f"gamma gradient norms are {'all' if finite else 'not all'} finite; at the last evaluation "
             f"the largest layer's is {ratio:.1f}x the smallest's (threshold here: within {GRAD_NORM_RATIO:g}x)")
    return Claim(where, paper, found, verdict(ok))
