"""Figure 1(b, c): activation-input percentiles of the last tracked layer, and the same for every layer.

Two sections: the paper's figure (one layer) and its extension to all tracked layers, each with one
drift claim per layer it shows.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bnrepro.report import claims, draw
from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import data_name, model_name
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._shared import BAND, absent, fig1_groups, pinned_text
from bnrepro.report.slices import BN, reference_slice
from bnrepro.report.stats import drift, percentiles, taps

LAST, EVERY = "fig1bc_percentiles", "percentiles_all_layers"
TITLE = "Figure 1(b, c): activation-input percentiles of the last hidden layer"
TITLE_ALL = "Activation-input percentiles of every hidden layer"


def _slice(ctx: Context) -> tuple[pd.DataFrame, dict[str, Any], list[str], str | None]:
    """(Figure 1's runs, what was pinned, their taps in the model's order, why there is no figure or None)."""
    runs, pinned = reference_slice(ctx.runs, ctx.varying, [BN], ctx.base_lr)
    names = taps(ctx.metrics[ctx.metrics["run"].isin(runs["run"])])
    if not names:
        return runs, pinned, names, "the runs track no act/<layer>/p<q> columns"
    return runs, pinned, names, None if fig1_groups(runs) else "no runs with bn=none or bn=before"


def _what(runs: pd.DataFrame, pinned: dict[str, Any]) -> str:
    unit = (f"unit or channel {runs['tracking.unit'].iloc[0]}" if "tracking.unit" in runs
            else "the tracked unit or channel")
    return (f"Percentiles over the {data_name(runs)} test set of the input to the activation of {unit} (a "
            "fully connected layer's unit: over all test images; a convolutional layer's channel: over all test "
            "images x positions), at each evaluation (with BN that input is the BN output gamma*xhat+beta). "
            "Panels in a row share one y scale: the paper's -2..2, widened where the data leave it. Drift below "
            "= max - min over the evaluations after step 0 (at step 0 BN's running statistics are not yet "
            "estimated) of the median and of the outer percentiles' spread, seed mean. "
            f"{BAND}{pinned_text(pinned)}")


def _percentile_section(ctx: Context, title: str, stem: str, runs: pd.DataFrame, which: list[str],
                        caption: str) -> Section:
    groups = fig1_groups(runs)
    rows = [(layer, percentiles(ctx.metrics, layer)) for layer in which]
    heading = f"Input to the activation: percentiles over the {data_name(runs)} test set ({model_name(runs)})"
    files = ctx.save(draw.percentile_figure(ctx.metrics, groups, rows, heading), stem)
    by_bn = {bn: g for bn, _, g in groups}
    checks = [claims.distribution_stable(layer, *(drift(ctx.metrics, by_bn[b], cols) if b in by_bn else None
                                                  for b in ("none", "before"))) for layer, cols in rows]
    return Section(title, caption, checks, files, notes=absent(groups))


@section(order=20, stems=(LAST,))
def last_layer(ctx: Context) -> Section | Skipped:
    """The paper's figure: the last tracked layer (h3 of the MLP, fc1 of the CNN)."""
    runs, pinned, names, why = _slice(ctx)
    if why:
        return Skipped(TITLE, why)
    caption = f"Layer {names[-1]}, the paper's 'typical unit'. {_what(runs, pinned)}"
    return _percentile_section(ctx, TITLE, LAST, runs, [names[-1]], caption)


@section(order=21, stems=(EVERY,))
def every_layer(ctx: Context) -> Section | Skipped:
    runs, pinned, names, why = _slice(ctx)
    if why:
        return Skipped(TITLE_ALL, why)
    if len(names) == 1:
        return Skipped(TITLE_ALL, "one hidden layer only: Figure 1(b, c) above already shows it")
    caption = f"Layers {', '.join(names)}, first to last. {_what(runs, pinned)}"
    return _percentile_section(ctx, TITLE_ALL, EVERY, runs, names, caption)
