"""The paper's claims, each checked against numbers computed from this run set.

A verdict is never asserted: every function gets the measured numbers, states them, and decides by a rule
that names its threshold (bnrepro/report/thresholds.py). A claim that contrasts two groups of runs is
"reproduced" only when the contrast holds beyond the seeds' spread (the CONFIDENCE Welch interval of the
difference, or per-seed ranges that do not overlap, as each rule says); "partly reproduced" always comes with
the part that holds and the part that does not; "inconclusive" means the interval contains zero. What the
paper says is quoted from ../shared/PAPER.md, the project's reference for the paper (QUOTES).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bnrepro.report.stats import Drift, Interval, difference, step_span
from bnrepro.report.thresholds import AS_WELL_MARGIN, CONFIDENCE, HIGH_LR_FROM, HIGH_LR_TO, STABLE_RATIO, STALL_ACC

REPRODUCED, NOT_REPRODUCED, UNTESTABLE = "reproduced", "not reproduced", "not testable with these runs"
PARTLY, INCONCLUSIVE = "partly reproduced", "inconclusive"
VERDICTS = (REPRODUCED, PARTLY, INCONCLUSIVE, NOT_REPRODUCED, UNTESTABLE)

# ../shared/PAPER.md, word for word (tests/test_claims.py checks each against that file when it is present)
QUOTES = {
    "fig1a": "BN trains faster and ends higher.",
    "fig1bc": "Without BN the distribution drifts in mean and spread; with BN it stays stable.",
    "steps": ("Steps to reach Inception's best accuracy (72.2%): Inception 31.0M, BN-Baseline 13.3M, BN-x5 2.1M, "
              "BN-x30 2.7M (best accuracies 72.2, 72.7, 73.0, 74.8%)."),
    "x5_diverges": 'The same x5 without BN made parameters reach "machine infinity" (diverged).',
    "high_lr": ("Inception learning rate 0.0015; BN-x5 uses 0.0075, BN-x30 uses 0.045. The same x5 without BN "
                'made parameters reach "machine infinity" (diverged).'),
    "sigmoid": "BN-x5-Sigmoid reached 69.8%; Inception with sigmoid never trained.",
    "scale": ("BN(W u) = BN((aW) u) for a scalar a, so d BN((aW)u)/du = d BN(Wu)/du and d BN((aW)u)/d(aW) = "
              "(1/a) d BN(Wu)/dW: larger weights get smaller gradients."),
}

CONTRAST_RULE = (f"reproduced only if the {CONFIDENCE:.0%} Welch t-interval of the difference lies wholly on the "
                 "paper's side of 0 (thresholds.CONFIDENCE); inconclusive if it contains 0")
STEPS_RULE = ("reproduced only if every seed of the faster row reaches the target before every seed of the slower "
              "one (per-seed ranges do not overlap; a seed reaches it within thresholds.REACH_TOLERANCE); "
              "inconclusive if they overlap")


@dataclass
class Claim:
    where: str  # the paper's figure or section
    quote: str  # what the paper says, quoted from PAPER.md
    claim: str  # what is tested here, in a few words
    found: str  # what this run set shows, with its numbers
    verdict: str
    rule: str = ""  # how the verdict follows from the numbers, naming its threshold
    comparison: str = ""  # "shared lr 0.5", "tuned lr" or "" (no learning rate is involved)
    # True: `quote` restates a later paper's finding in our words (PAPER.md quotes only Ioffe & Szegedy 2015)
    paraphrased: bool = False

    def quoted(self) -> str:
        return f"{self.quote} (in our words)" if self.paraphrased else f'"{self.quote}"'

    def sentence(self) -> str:
        at = f" ({self.comparison})" if self.comparison else ""
        rule = f" Rule: {self.rule}." if self.rule else ""
        return (f"Paper ({self.where}): {self.quoted()} Tested{at}: {self.claim}. Here: {self.found}: "
                f"**{self.verdict}**.{rule}")


def untestable(where: str, quote: str, claim: str, missing: str, comparison: str = "") -> Claim:
    return Claim(where, quote, claim, f"no {missing}", UNTESTABLE, comparison=comparison)


def pct(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.2f}%"


def _mean(values: Sequence[float]) -> float:
    clean = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(clean) / len(clean) if clean else math.nan


def _by_side(iv: Interval) -> str:
    return {"above": REPRODUCED, "below": NOT_REPRODUCED, "inside": INCONCLUSIVE}[iv.side()]


def _interval_text(iv: Interval, what: str) -> str:
    return f"{what} {iv.points()} points ({CONFIDENCE:.0%} Welch interval)"


def _contrast(where: str, quote: str, claim: str, higher: Sequence[float], lower: Sequence[float],
              names: tuple[str, str], measured: str, comparison: str) -> Claim:
    """`higher` should exceed `lower` (accuracies as fractions) beyond the seeds' spread."""
    a, b = names
    means = f"{measured} {pct(_mean(higher))} ({a}) vs {pct(_mean(lower))} ({b})"
    iv = difference(list(higher), list(lower))
    if iv is None:
        return Claim(where, quote, claim, f"{means}; fewer than two seeds a side, so no interval", UNTESTABLE,
                     CONTRAST_RULE, comparison)
    return Claim(where, quote, claim, f"{means}; {_interval_text(iv, f'{a} - {b}')}", _by_side(iv),
                 CONTRAST_RULE, comparison)


def _missing_side(base: Sequence[float], bn: Sequence[float]) -> str | None:
    return "finished runs without BN" if not len(base) else "finished runs with BN" if not len(bn) else None


def bn_ends_higher(base: Sequence[float], bn: Sequence[float], comparison: str = "") -> Claim:
    """Final test accuracies of the runs without and with BN (diverged runs have none)."""
    if missing := _missing_side(base, bn):
        return untestable("Fig. 1(a)", QUOTES["fig1a"], "with BN the network ends at a higher test accuracy",
                          missing, comparison)
    return _contrast("Fig. 1(a)", QUOTES["fig1a"], "with BN the network ends at a higher test accuracy", bn, base,
                     ("BN", "no BN"), "mean final test accuracy", comparison)


def bn_trains_faster(step: int | None, base: Sequence[float], bn: Sequence[float], fraction: float,
                     comparison: str = "") -> Claim:
    """Test accuracies of each run at `step`, the first evaluation at `fraction` of training."""
    claim = f"BN is ahead early in training (at {fraction:.0%} of it)"
    if missing := _missing_side(base, bn):
        return untestable("Fig. 1(a)", QUOTES["fig1a"], claim, missing, comparison)
    if step is None:
        return untestable("Fig. 1(a)", QUOTES["fig1a"], claim,
                          "evaluation point shared by the runs with and without BN", comparison)
    return _contrast("Fig. 1(a)", QUOTES["fig1a"], claim, bn, base, ("BN", "no BN"),
                     f"mean test accuracy at step {step}", comparison)


def distribution_stable(layer: str, base: Drift | None, bn: Drift | None, seed_note: str = "") -> Claim:
    where, quote = "Fig. 1(b, c)", QUOTES["fig1bc"]
    claim = f"the tracked unit's activation input in layer {layer} drifts less with BN"
    if base is None or bn is None:
        return untestable(where, quote, claim, "percentile curves " + ("without BN" if base is None else "with BN"))
    rule = (f"stable = each run's drift (max - min over training) with BN below {STABLE_RATIO:g}x the baseline's, "
            f"the {CONFIDENCE:.0%} Welch interval of BN - {STABLE_RATIO:g} x no BN wholly below 0 "
            "(thresholds.STABLE_RATIO, thresholds.CONFIDENCE), for the median and for the 15-85 spread")
    parts, sides = [], {}
    for name, b, n in (("median", bn.median, base.median), ("15-85 spread", bn.spread, base.spread)):
        iv = difference(list(b), list(n), STABLE_RATIO)
        ratio = f"{b.mean() / n.mean():.2f}x" if n.mean() > 0 else "the baseline's did not move"
        text = f"{name} drift {b.mean():.2f} with BN vs {n.mean():.2f} without ({ratio}, seed means of per-run drifts)"
        if iv is None:
            parts.append(f"{text}; fewer than two seeds a side, so no interval")
            continue
        sides[name] = iv.side()
        parts.append(f"{text}; BN - {STABLE_RATIO:g} x no BN {iv.points(1.0)} ({CONFIDENCE:.0%} Welch interval)")
    found = "; ".join(parts) + seed_note
    if len(sides) < 2:
        return Claim(where, quote, claim, found, UNTESTABLE, rule)
    held = [k for k, s in sides.items() if s == "below"]
    if len(held) == 2:
        return Claim(where, quote, claim, found, REPRODUCED, rule)
    if held:
        missing = next(k for k in sides if k not in held)
        found += f". The {held[0]} part holds; the {missing} part does not"
        return Claim(where, quote, claim, found, PARTLY, rule)
    verdict = NOT_REPRODUCED if "above" in sides.values() else INCONCLUSIVE
    return Claim(where, quote, claim, found, verdict, rule)


def bn_beats_counterparts(pairs: list[tuple[str, Interval | None]]) -> Claim:
    """pairs: (configuration, the Welch interval of BN - no BN final accuracy at otherwise equal settings)."""
    where, quote = "Fig. 1(a), every configuration", QUOTES["fig1a"]
    claim = "BN ends higher than the same settings without BN, in every configuration"
    tested = [(name, iv) for name, iv in pairs if iv is not None]
    if not tested:
        missing = "configuration with two or more seeds both with and without BN" if pairs else \
            "configuration that exists both with and without BN"
        return untestable(where, quote, claim, missing)
    groups = {side: [name for name, iv in tested if iv.side() == side] for side in ("above", "inside", "below")}
    found = "; ".join(f"{name}: BN - no BN {iv.points()} points" for name, iv in tested)
    found += f" ({CONFIDENCE:.0%} Welch intervals)"
    rule = f"each configuration as {CONTRAST_RULE}; reproduced only if it holds in all"
    if len(groups["above"]) == len(tested):
        return Claim(where, quote, claim, found, REPRODUCED, rule)
    words = {"above": "holds at", "inside": "is inside the seeds' spread at", "below": "is reversed at"}
    summary = "; ".join(f"BN's lead {words[s]} {', '.join(names)}" for s, names in groups.items() if names)
    if groups["above"]:
        return Claim(where, quote, claim, f"{found}. {summary}", PARTLY, rule)
    return Claim(where, quote, claim, f"{found}. {summary}", NOT_REPRODUCED if groups["below"] else INCONCLUSIVE,
                 rule)


@dataclass
class LrOutcome:
    """The runs of one network (with or without BN) at one learning rate."""

    lr: float
    n: int
    diverged: int
    stalled: int
    final_mean: float  # over the runs that did not diverge; NaN if all did

    @property
    def failed(self) -> int:
        return self.diverged + self.stalled

    def text(self, base_lr: float) -> str:
        return (f"lr {self.lr:g} ({self.lr / base_lr:g}x): {self.diverged} of {self.n} diverged, {self.stalled} "
                f"stalled, mean final {pct(self.final_mean)}")


def high_lr_without_bn_diverges(at: LrOutcome | None, first_fail: LrOutcome | None, base_lr: float,
                                scope: str = "") -> Claim:
    """at: the runs without BN at the lowest learning rate >= HIGH_LR_FROM x base; first_fail: the lowest rate
    at which every run without BN diverged or stalled (None: none)."""
    where, quote = "Sec. 4.2", QUOTES["x5_diverges"]
    claim = f"without BN, {HIGH_LR_FROM}x the base learning rate diverges"
    rule = (f"reproduced only if every run without BN at {HIGH_LR_FROM}x the base lr diverged "
            f"(thresholds.HIGH_LR_FROM); partly if each diverged or stalled below thresholds.STALL_ACC "
            f"({STALL_ACC:.0%}) test accuracy")
    if at is None:
        return untestable(where, quote, claim, f"runs without BN at >= {HIGH_LR_FROM}x the base lr "
                          f"({HIGH_LR_FROM * base_lr:g}){scope}")
    found = at.text(base_lr) + scope
    if not math.isclose(at.lr, HIGH_LR_FROM * base_lr, rel_tol=1e-9):
        found += f" (no runs at exactly {HIGH_LR_FROM}x; this is the lowest rate above it)"
    if at.diverged == at.n:
        return Claim(where, quote, claim, found, REPRODUCED, rule)
    if at.failed == at.n:
        found += "; every run fails as the paper's did, but by stalling at chance rather than by overflowing"
        return Claim(where, quote, claim, found, PARTLY, rule)
    if first_fail is not None:
        found += f"; the network without BN trains there, and first fails at {first_fail.text(base_lr)}"
    else:
        found += "; the network without BN trains there and at every higher rate in this run set"
    return Claim(where, quote, claim, found, NOT_REPRODUCED, rule)


def high_lr_with_bn_trains(bn: dict[int, LrOutcome], base: dict[int, LrOutcome], base_lr: float,
                           scope: str = "") -> Claim:
    """bn / base: the runs with / without BN at each multiple HIGH_LR_FROM and HIGH_LR_TO of the base lr."""
    where, quote = "Sec. 4.2", QUOTES["high_lr"]
    multiples = (HIGH_LR_FROM, HIGH_LR_TO)
    claim = (f"with BN, {HIGH_LR_FROM}x and {HIGH_LR_TO}x the base learning rate train, where without BN "
             f"{HIGH_LR_FROM}x does not")
    rule = (f"reproduced only if every BN run at {HIGH_LR_FROM}x and {HIGH_LR_TO}x trains (no divergence, best "
            f"accuracy above thresholds.STALL_ACC) and every run without BN at {HIGH_LR_FROM}x diverged or stalled "
            "(thresholds.HIGH_LR_FROM, HIGH_LR_TO)")
    if any(m not in bn for m in multiples):
        lrs = ", ".join(f"{m * base_lr:g}" for m in multiples if m not in bn)
        return untestable(where, quote, claim, f"BN runs at lr {lrs}{scope}")
    bn_trains = all(bn[m].failed == 0 for m in multiples)
    found = "with BN " + "; ".join(bn[m].text(base_lr) for m in multiples)
    if not bn_trains:
        return Claim(where, quote, claim, found + scope, NOT_REPRODUCED, rule)
    if HIGH_LR_FROM not in base:
        found += (f"{scope}. The BN part holds; there are no runs without BN at {HIGH_LR_FROM}x to show the "
                  "contrast")
        return Claim(where, quote, claim, found, PARTLY, rule)
    found += f"; without BN {base[HIGH_LR_FROM].text(base_lr)}{scope}"
    if base[HIGH_LR_FROM].failed == base[HIGH_LR_FROM].n:
        return Claim(where, quote, claim, found, REPRODUCED, rule)
    found += (f". The BN part holds, but the network without BN trains at {HIGH_LR_FROM}x too, so the contrast "
              "the paper draws is missing")
    return Claim(where, quote, claim, found, PARTLY, rule)


def fewer_steps(name: str, slow_name: str, fast: list[int | None], slow: list[int | None], claim: str,
                comparison: str = "") -> Claim:
    """`name` reaches the target in fewer steps than `slow_name`: per-seed first-reach steps (None: never)."""
    where, quote = "Sec. 4.2, table", QUOTES["steps"]
    if not fast or not slow:
        return untestable(where, quote, claim, f"{name} and {slow_name} rows", comparison)
    found = (f"first step at the target, min-max over seeds (never: a seed that does not reach it): {name} "
             f"{step_span(fast)}, {slow_name} {step_span(slow)}")
    inf = [math.inf if s is None else s for s in fast], [math.inf if s is None else s for s in slow]
    if max(inf[0]) < min(inf[1]):
        verdict = REPRODUCED
    elif min(inf[0]) > max(inf[1]) or (all(s is None for s in fast) and all(s is None for s in slow)):
        verdict = NOT_REPRODUCED
    else:
        verdict = INCONCLUSIVE
    return Claim(where, quote, claim, found, verdict, STEPS_RULE, comparison)


def x30_ends_highest(x30: Sequence[float], x5: Sequence[float]) -> Claim:
    """Each run's best test accuracy at 30x and at 5x the base lr, with BN."""
    claim = "BN-x30 reaches a higher best accuracy than BN-x5"
    if not len(x30) or not len(x5):
        return untestable("Sec. 4.2, table", QUOTES["steps"], claim, "BN-x30 runs" if not len(x30) else "BN-x5 runs")
    return _contrast("Sec. 4.2, table", QUOTES["steps"], claim, x30, x5, ("BN-x30", "BN-x5"),
                     "mean best test accuracy", "")


def sigmoid_trains_only_with_bn(bn: LrOutcome | None, base: LrOutcome | None, base_lr: float) -> Claim:
    """The sigmoid network's runs with and without BN at the base lr."""
    where, quote = "Sec. 4.2", QUOTES["sigmoid"]
    claim = "a sigmoid network trains with BN, and without BN it does not"
    rule = (f"reproduced only if every sigmoid run with BN trains (no divergence, best above thresholds.STALL_ACC, "
            f"{STALL_ACC:.0%}) and every one without BN diverged or stalled")
    if bn is None or base is None:
        return untestable(where, quote, claim, "sigmoid runs " + ("with BN" if bn is None else "without BN"))
    found = f"with BN {bn.text(base_lr)}; without BN {base.text(base_lr)}"
    if bn.failed:
        return Claim(where, quote, claim, found, NOT_REPRODUCED, rule)
    if base.failed == base.n:
        return Claim(where, quote, claim, found, REPRODUCED, rule)
    found += (". The BN part holds, but the sigmoid network trains without BN as well, so BN is not what makes it "
              "trainable here: the paper's contrast is missing")
    return Claim(where, quote, claim, found, PARTLY, rule)


def joint(where: str, quote: str, claim: str, parts: list[tuple[str, Claim]]) -> Claim:
    """A claim made of parts that must all hold, e.g. "slower early, higher at the end": each part's own verdict
    and numbers, reproduced only if every part is, partly if some are."""
    found = "; ".join(f"{name}: {part.found} ({part.verdict})" for name, part in parts)
    rule = "reproduced only if every part is: " + "; ".join(f"{name}: {part.rule}" for name, part in parts)
    verdicts = [part.verdict for _, part in parts]
    if all(v == REPRODUCED for v in verdicts):
        verdict = REPRODUCED
    elif any(v == REPRODUCED for v in verdicts):
        verdict = PARTLY
    elif UNTESTABLE in verdicts:
        verdict = UNTESTABLE
    elif NOT_REPRODUCED in verdicts:
        verdict = NOT_REPRODUCED
    else:
        verdict = INCONCLUSIVE
    return Claim(where, quote, claim, found, verdict, rule)


def ends_higher(where: str, quote: str, name: str, other: str, higher: Sequence[float], lower: Sequence[float],
                claim: str, measured: str = "final test accuracy") -> Claim:
    """Run `name` ends higher in `measured` (by default its final test accuracy) than `other`, beyond the seeds'
    spread."""
    if not len(higher) or not len(lower):
        return untestable(where, quote, claim, f"finished {name if not len(higher) else other} runs")
    return _contrast(where, quote, claim, higher, lower, (name, other), f"mean {measured}", "")


def as_well_as(where: str, quote: str, name: str, reference: str, values: Sequence[float],
               reference_values: Sequence[float], claim: str, measured: str = "final test accuracy") -> Claim:
    """Run `name` does at least about as well as `reference` (accuracies as fractions): it loses no more than
    AS_WELL_MARGIN, beyond the seeds' spread."""
    rule = (f"reproduced only if the {CONFIDENCE:.0%} Welch t-interval of {name} - {reference} lies wholly above "
            f"-{100 * AS_WELL_MARGIN:.2g} points (thresholds.AS_WELL_MARGIN); not reproduced if wholly below it; "
            "inconclusive otherwise")
    if not len(values) or not len(reference_values):
        return untestable(where, quote, claim, f"finished {name if not len(values) else reference} runs")
    means = f"mean {measured} {pct(_mean(values))} ({name}) vs {pct(_mean(reference_values))} ({reference})"
    iv = difference(list(values), list(reference_values))
    if iv is None:
        return Claim(where, quote, claim, f"{means}; fewer than two seeds a side, so no interval", UNTESTABLE, rule,
                     paraphrased=True)
    verdict = REPRODUCED if iv.low > -AS_WELL_MARGIN else NOT_REPRODUCED if iv.high < -AS_WELL_MARGIN else INCONCLUSIVE
    return Claim(where, quote, claim, f"{means}; {_interval_text(iv, f'{name} - {reference}')}", verdict, rule,
                 paraphrased=True)
