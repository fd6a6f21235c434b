"""How runs ended (diverged, stalled at chance) and the claims of Sec. 4.2 built on that.

The learning-rate figure and the divergence table both check the learning-rate claims, on the same reference
slice, so they can never disagree.
"""

from __future__ import annotations

import pandas as pd

from bnrepro.report import claims
from bnrepro.report.slices import ACT, BN, LR, describe, matches, reference_slice
from bnrepro.report.thresholds import HIGH_LR_FROM, HIGH_LR_TO, SAME_VALUE_REL_TOL, STALL_ACC


def n_diverged(runs: pd.DataFrame) -> int:
    return int((runs["status"] == "diverged").sum())


def stalled(runs: pd.DataFrame) -> pd.Series:
    """Runs that finished without diverging but never learned: best test accuracy near chance."""
    return (runs["status"] == "completed") & (runs["best_test_acc"].astype(float) < STALL_ACC)


def trained(runs: pd.DataFrame) -> pd.Series:
    """Runs that completed and learned: neither diverged nor stalled."""
    return (runs["status"] == "completed") & ~stalled(runs)


def outcome(runs: pd.DataFrame, lr: float) -> claims.LrOutcome:
    """How the runs of one network at one learning rate ended."""
    final = runs.loc[runs["status"] != "diverged", "final_test_acc"].astype(float)
    return claims.LrOutcome(float(lr), len(runs), n_diverged(runs), int(stalled(runs).sum()),
                            float(final.mean()) if len(final) else float("nan"))


def _outcomes(runs: pd.DataFrame, bn: str) -> list[claims.LrOutcome]:
    mine = runs[matches(runs, BN, bn)]
    return [outcome(mine[matches(mine, LR, lr)], lr) for lr in sorted(mine[LR].astype(float).unique())]


def _at(outcomes: list[claims.LrOutcome], lr: float) -> claims.LrOutcome | None:
    return next((o for o in outcomes if abs(o.lr - lr) <= SAME_VALUE_REL_TOL * lr), None)


def lr_claims(runs: pd.DataFrame, varying: list[str], base_lr: float | None) -> list[claims.Claim]:
    """Sec. 4.2's learning-rate claims (without BN 5x diverges; with BN 5x and 30x train where the baseline
    does not), on the reference slice."""
    if base_lr is None or LR not in runs or BN not in runs:
        return []
    runs, pinned = reference_slice(runs, varying, [LR, BN], base_lr)
    scope = f" ({describe(pinned)})" if pinned else ""
    base, bn = _outcomes(runs, "none"), _outcomes(runs, "before")
    high = [o for o in base if o.lr >= HIGH_LR_FROM * base_lr * (1 - SAME_VALUE_REL_TOL)]
    first_fail = next((o for o in base if o.n and o.failed == o.n and o.lr > base_lr), None)
    multiples = (HIGH_LR_FROM, HIGH_LR_TO)
    bn_at = {m: o for m in multiples if (o := _at(bn, m * base_lr)) is not None}
    base_at = {m: o for m in multiples if (o := _at(base, m * base_lr)) is not None}
    return [claims.high_lr_without_bn_diverges(high[0] if high else None, first_fail, base_lr, scope),
            claims.high_lr_with_bn_trains(bn_at, base_at, base_lr, scope)]


def sigmoid_claim(runs: pd.DataFrame, varying: list[str], base_lr: float | None) -> claims.Claim | None:
    """Sec. 4.2's sigmoid claim on the base-lr runs, when the run set has sigmoid networks with and without BN."""
    if ACT not in runs or BN not in runs or base_lr is None:
        return None
    runs, _ = reference_slice(runs, varying, [BN, ACT], base_lr)
    sig = runs[matches(runs, ACT, "sigmoid")]
    with_bn, without = sig[matches(sig, BN, "before")], sig[matches(sig, BN, "none")]
    lr = float(sig[LR].iloc[0]) if LR in sig and len(sig) else base_lr
    return claims.sigmoid_trains_only_with_bn(outcome(with_bn, lr) if len(with_bn) else None,
                                              outcome(without, lr) if len(without) else None, base_lr)
