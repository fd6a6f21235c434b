"""Accuracy per configuration (mean and std over seeds), and whether BN beats its no-BN twin in each."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bnrepro.report import claims
from bnrepro.report.markdown import Section, cell
from bnrepro.report.outcomes import n_diverged
from bnrepro.report.sections import Context, section
from bnrepro.report.slices import BN, configurations, fmt_value, same, short_name
from bnrepro.report.stats import stat

Groups = list[tuple[dict[str, Any], pd.DataFrame]]


def _bn_pairs(groups: Groups, varying: list[str]) -> tuple[int, int]:
    """(configurations where BN beats the same settings without BN, configurations with such a twin)."""
    if BN not in varying:
        return 0, 0
    wins = pairs = 0
    for values, group in groups:
        twin = next((g for v, g in groups if v[BN] == "none" and values[BN] != "none"
                     and all(same(v[k], values[k]) for k in varying if k != BN)), None)
        if twin is None:
            continue
        bn, base = stat(group["final_test_acc"]), stat(twin["final_test_acc"])
        if bn.n and base.n:
            pairs += 1
            wins += bn.mean > base.mean
    return wins, pairs


@section(order=60)
def accuracy_table(ctx: Context) -> Section:
    groups = configurations(ctx.runs, ctx.varying)
    rows = []
    for values, group in groups:
        final, best = stat(group["final_test_acc"]), stat(group["best_test_acc"])
        names = {short_name(k, ctx.varying): fmt_value(v) for k, v in values.items()}
        rows.append({**(names or {"configuration": "all runs"}), "n": len(group),
                     "diverged": n_diverged(group), "final mean (%)": cell(final.mean),
                     "final std": cell(final.std), "best mean (%)": cell(best.mean), "best std": cell(best.std)})
    wins, pairs = _bn_pairs(groups, ctx.varying)
    caption = ("Test accuracy per configuration (the config values that vary across the run set, seed "
               "aside): mean and sample std over seeds, in percent. A diverged run has no final accuracy, "
               "so the final mean covers the runs that did not diverge; best is each run's highest "
               "evaluated accuracy.")
    return Section("Accuracy per configuration", caption, [claims.bn_beats_counterparts(wins, pairs)],
                   table=pd.DataFrame(rows))
