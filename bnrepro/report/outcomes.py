"""How runs ended (diverged, stalled at chance) and Sec. 4.2's divergence claims built on that.

The learning-rate figure and the divergence table both check these claims, on the same reference
slice, so they can never disagree.
"""

from __future__ import annotations

import pandas as pd

from bnrepro.report import claims
from bnrepro.report.slices import BN, LR, describe, matches, reference_slice
from bnrepro.report.thresholds import HIGH_LR_FROM, HIGH_LR_TO, SAME_VALUE_REL_TOL, STALL_ACC


def n_diverged(runs: pd.DataFrame) -> int:
    return int((runs["status"] == "diverged").sum())


def stalled(runs: pd.DataFrame) -> pd.Series:
    """Runs that finished without diverging but never learned: best test accuracy near chance."""
    return (runs["status"] == "completed") & (runs["best_test_acc"].astype(float) < STALL_ACC)


def lr_claims(runs: pd.DataFrame, varying: list[str], base_lr: float | None) -> list[claims.Claim]:
    """Sec. 4.2's divergence claims (no BN at >= 5x diverges, BN at 5x-30x trains), on the reference slice."""
    if base_lr is None or LR not in runs or BN not in runs:
        return []
    runs, pinned = reference_slice(runs, varying, [LR, BN], base_lr)
    lr = runs[LR].astype(float)
    high = lr >= HIGH_LR_FROM * base_lr * (1 - SAME_VALUE_REL_TOL)
    no_bn = runs[high & matches(runs, BN, "none")]
    bn = runs[high & (lr <= HIGH_LR_TO * base_lr * (1 + SAME_VALUE_REL_TOL)) & matches(runs, BN, "before")]
    scope = f" ({describe(pinned)})" if pinned else ""
    failed = no_bn[(no_bn["status"] == "diverged") | stalled(no_bn)]
    first_fail = float(failed[LR].astype(float).min()) if len(failed) else None
    bn_there = runs[matches(runs, BN, "before") & matches(runs, LR, first_fail)] if first_fail else runs.iloc[:0]
    bn_final = float(bn_there["final_test_acc"].astype(float).mean()) if len(bn_there) else None
    return [claims.high_lr_without_bn_diverges(n_diverged(no_bn), int(stalled(no_bn).sum()), len(no_bn), base_lr,
                                               first_fail, bn_final, scope),
            claims.high_lr_with_bn_trains(n_diverged(bn), len(bn), base_lr, scope)]
