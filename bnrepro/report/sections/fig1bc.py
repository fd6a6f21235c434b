"""Figure 1(b, c) as the paper drew it: one network, one unit, one line per percentile, with and without BN.

Three sections: the paper's figure (the last tracked layer of the chosen seed's networks), the other seeds'
networks as small multiples, and every tracked layer of the chosen seed's networks. The tracked unit of one
network is a different random unit in another seed's network, so nothing here averages percentiles across
seeds; the drift claims measure each run on its own and only then summarise the runs.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bnrepro.report import claims, draw
from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import data_name, model_name
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._shared import LABELS, absent, fig1_groups, pinned_text
from bnrepro.report.slices import BN, SEED, fmt_value, reference_slice
from bnrepro.report.stats import drift, percentiles, taps

LAST, SEEDS, EVERY = "fig1bc_percentiles", "fig1bc_seeds", "percentiles_all_layers"
TITLE = "Figure 1(b, c): activation-input percentiles of one unit of the last hidden layer"
TITLE_SEEDS = "Figure 1(b, c) for every seed: one network per panel"
TITLE_ALL = "Activation-input percentiles of every hidden layer (one network each)"


def _slice(ctx: Context) -> tuple[pd.DataFrame, dict[str, Any], list[str], str | None]:
    """(Figure 1's runs, what was pinned, their taps in the model's order, why there is no figure or None)."""
    runs, pinned = reference_slice(ctx.runs, ctx.varying, [BN], ctx.base_lr)
    names = taps(ctx.metrics[ctx.metrics["run"].isin(runs["run"])])
    if not names:
        return runs, pinned, names, "the runs track no act/<layer>/p<q> columns"
    return runs, pinned, names, None if fig1_groups(runs) else "no runs with bn=none or bn=before"


def seeds_of(runs: pd.DataFrame) -> list[Any]:
    return sorted(set(runs[SEED]), key=lambda s: (str(type(s)), s)) if SEED in runs else []


def chosen_seed(groups: list[draw.Group], wanted: int) -> Any:
    """`wanted` when every group has a run with that seed, else the smallest seed they all have, else the
    smallest seed of the first group."""
    shared = set.intersection(*(set(g[SEED]) for _, _, g in groups)) if groups else set()
    if wanted in shared:
        return wanted
    return min(shared) if shared else min(groups[0][2][SEED])


def _panel(bn: str, label: str, runs: pd.DataFrame, seed: Any, layer: str) -> draw.Panel | None:
    mine = runs[runs[SEED] == seed]
    if mine.empty:
        return None
    return f"{LABELS.get(bn, label)}, seed {fmt_value(seed)}, layer {layer}", str(mine["run"].iloc[0])


def _unit(runs: pd.DataFrame) -> str:
    return (f"unit or channel {runs['tracking.unit'].iloc[0]}" if "tracking.unit" in runs
            else "the tracked unit or channel")


def _what(runs: pd.DataFrame, seed: Any, pinned: dict[str, Any]) -> str:
    return (f"One network per panel, {_unit(runs)}: each line is one percentile, over the {data_name(runs)} test "
            "set, of the input to that unit's activation at each evaluation (a fully connected layer's unit: over "
            "all test images; a convolutional layer's channel: over all test images x positions; with BN the input "
            "is the BN output gamma*xhat+beta). Nothing is averaged across seeds: the tracked unit is a different "
            "random unit in each seed's network. Panels in a row share one y scale: the paper's -2..2, widened "
            "where the data leave it. Drift = max - min over the evaluations after step 0 (at step 0 BN's running "
            "statistics are not yet estimated) of the median and of the outer percentiles' spread, measured per "
            f"run on every seed's network, then summarised over seeds. Drawn: seed {fmt_value(seed)}."
            f"{pinned_text(pinned)}")


def _drift_claims(ctx: Context, groups: list[draw.Group], layers: list[str]) -> list[claims.Claim]:
    by_bn = {bn: g for bn, _, g in groups}
    out = []
    for layer in layers:
        columns = percentiles(ctx.metrics, layer)
        seeds = ", ".join(fmt_value(s) for s in seeds_of(pd.concat([g for _, _, g in groups])))
        out.append(claims.distribution_stable(
            layer, *(drift(ctx.metrics, by_bn[b], columns) if b in by_bn else None for b in ("none", "before")),
            seed_note=f" (seeds {seeds})"))
    return out


def _heading(runs: pd.DataFrame) -> str:
    return f"Input to the activation: percentiles over the {data_name(runs)} test set ({model_name(runs)})"


@section(order=20, stems=(LAST,), axes=True)
def last_layer(ctx: Context) -> Section | Skipped:
    """The paper's figure: the last tracked layer (h3 of the MLP, fc1 of the CNN) of one network each."""
    runs, pinned, names, why = _slice(ctx)
    if why:
        return Skipped(TITLE, why)
    groups = fig1_groups(runs)
    seed, layer = chosen_seed(groups, ctx.figure_seed), names[-1]
    panels = [p for bn, label, g in groups if (p := _panel(bn, label, g, seed, layer))]
    files = ctx.save(draw.percentile_figure(ctx.metrics, [(panels, percentiles(ctx.metrics, layer))],
                                            _heading(runs)), LAST)
    caption = f"Layer {layer}, the paper's 'typical unit'. {_what(runs, seed, pinned)}"
    return Section(TITLE, caption, _drift_claims(ctx, groups, [layer]), files, notes=absent(groups))


@section(order=21, stems=(SEEDS,), axes=True)
def every_seed(ctx: Context) -> Section | Skipped:
    """Small multiples: the same figure for each seed's networks, one row per seed."""
    runs, pinned, names, why = _slice(ctx)
    if why:
        return Skipped(TITLE_SEEDS, why)
    groups = fig1_groups(runs)
    seeds = seeds_of(runs)
    if len(seeds) < 2:
        return Skipped(TITLE_SEEDS, "one seed only: Figure 1(b, c) above already shows it")
    layer, columns = names[-1], percentiles(ctx.metrics, names[-1])
    rows = [([p for bn, label, g in groups if (p := _panel(bn, label, g, seed, layer))], columns) for seed in seeds]
    files = ctx.save(draw.percentile_figure(ctx.metrics, [r for r in rows if r[0]], _heading(runs)), SEEDS)
    caption = (f"Layer {layer}, one row per seed, one network per panel, {_unit(runs)}: the networks behind the "
               "drift numbers of the figure above, drawn one by one rather than averaged (each seed's tracked unit "
               f"is another random unit).{pinned_text(pinned)}")
    return Section(TITLE_SEEDS, caption, [], files)


@section(order=22, stems=(EVERY,), axes=True)
def every_layer(ctx: Context) -> Section | Skipped:
    runs, pinned, names, why = _slice(ctx)
    if why:
        return Skipped(TITLE_ALL, why)
    if len(names) == 1:
        return Skipped(TITLE_ALL, "one hidden layer only: Figure 1(b, c) above already shows it")
    groups = fig1_groups(runs)
    seed = chosen_seed(groups, ctx.figure_seed)
    rows = [([p for bn, label, g in groups if (p := _panel(bn, label, g, seed, layer))],
             percentiles(ctx.metrics, layer)) for layer in names]
    files = ctx.save(draw.percentile_figure(ctx.metrics, rows, _heading(runs)), EVERY)
    caption = f"Layers {', '.join(names)}, first to last. {_what(runs, seed, pinned)}"
    return Section(TITLE_ALL, caption, _drift_claims(ctx, groups, names), files, notes=absent(groups))
