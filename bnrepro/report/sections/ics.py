"""Internal covariate shift measured (experiment=ics): Santurkar et al. 2018's Definition 2.1 per layer over training,
BN vs no BN, and their claim that BN does not reduce it.

Columns ics/l2/<layer> and ics/cos/<layer> (probes/ics.py). The first layer has nothing before it to move, so its
ICS is 0 and 1 by construction: the figure and the claim start at the second.
"""

from __future__ import annotations

import re

import pandas as pd
from matplotlib.figure import Figure

from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import data_name, model_name
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._probed import SANTURKAR, STYLE, band, bn_groups, parts_claim, per_run
from bnrepro.report.sections._shared import pinned_text
from bnrepro.report.slices import BN, reference_slice
from bnrepro.report.stats import difference
from bnrepro.report.thresholds import CONFIDENCE

STEM = "ics_per_layer"
COLUMN = re.compile(r"^ics/(?P<measure>l2|cos)/(?P<layer>.+)$")
FINDING = ("BN does not reduce internal covariate shift as measured by the change of a layer's gradient when the "
           "layers before it take their update: with BN the change is as large or larger, and G and G' less "
           "correlated.")


def _layers(metrics: pd.DataFrame) -> list[str]:
    """The measured layers in the model's order (metrics.csv's column order), the first one left out."""
    names = [m["layer"] for c in metrics.columns if (m := COLUMN.match(c)) and metrics[c].notna().any()]
    return list(dict.fromkeys(names))[1:]


def _figure(ctx: Context, groups: dict[str, pd.DataFrame], layers: list[str], title: str) -> Figure:
    fig = Figure(figsize=(3.6 * len(layers), 6.4), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(2, len(layers), squeeze=False, sharex=True)
    for col, layer in enumerate(layers):
        for row, (measure, label) in enumerate((("l2", "||G - G'||_2"), ("cos", "cos(G, G')"))):
            ax = axes[row][col]
            for bn, runs in groups.items():
                color, name = STYLE[bn]
                band(ax, ctx.metrics, runs, f"ics/{measure}/{layer}", None, color, name)
            if measure == "l2":
                ax.set_yscale("log")
                ax.set_title(f"layer {layer}")
            ax.set_ylabel(label if col == 0 else "")
            ax.grid(alpha=0.3, which="both")
        axes[1][col].set_xlabel("training step")
    axes[0][0].legend(fontsize="small")
    return fig


@section(order=90, stems=(STEM,), regression=True)
def ics_per_layer(ctx: Context) -> Section | Skipped | None:
    layers = _layers(ctx.metrics)
    if not layers:
        return None
    runs, pinned = reference_slice(ctx.runs, ctx.varying, [BN], ctx.base_lr)
    groups = bn_groups(runs[runs["probes.ics.every"].notna()] if "probes.ics.every" in runs else runs.iloc[:0])
    where = f"{model_name(runs)} on {data_name(runs)}"
    title = f"Internal covariate shift per layer (Santurkar et al. Definition 2.1; {where})"
    if not groups:
        return Skipped(title, "no runs without or with BN (before) that ran the ics probe in this slice")
    parts = []
    for layer in layers:
        base, bn = ({k: per_run(ctx.metrics, groups.get(b, runs.iloc[:0]), f"ics/{k}/{layer}") for k in ("l2", "cos")}
                    for b in ("none", "before"))
        # more shift with BN: a larger ||G - G'|| or a smaller cos(G, G'); the cosine's sign flipped to say so
        parts += [(f"{layer} ||G - G'||", difference(bn["l2"], base["l2"])),
                  (f"{layer} -cos(G, G')", difference([-v for v in bn["cos"]], [-v for v in base["cos"]]))]
    rule = (f"each layer and measure: the {CONFIDENCE:.0%} Welch interval of BN - no BN of the runs' medians over "
            "training (thresholds.CONFIDENCE) wholly above 0, i.e. more shift with BN; reproduced if every one is, "
            "not reproduced if none is and some lie wholly below 0 (BN reduces the shift)")
    found = [parts_claim(SANTURKAR + ", Sec. 2.2 and Fig. 5", FINDING, "with BN, every layer's ICS is at least as "
                         "large as without: ||G - G'|| higher and cos(G, G') lower", parts, "above", rule, "")]
    caption = ("For each layer i after the first: G, the step's gradient w.r.t. W_i, and G', the same on the same "
               "batch after layers 1..i-1 took this step's update (probes/ics.py); ||G - G'||_2 (log y) and "
               "cos(G, G') over training. Lines: mean over seeds at each probed step; band: min-max over seeds. "
               "The claim compares each run's median over its probed steps; the table gives those medians, seed mean "
               "and range." + pinned_text(pinned))
    drawn = _drawn(layers)
    if len(drawn) < len(layers):
        caption += f" Drawn: {len(drawn)} of the {len(layers)} layers, evenly spaced ({', '.join(drawn)}); the table " \
                   "has every layer."
    fig = _figure(ctx, groups, drawn, title)
    return Section(title, caption, found, files=ctx.save(fig, STEM), table=_table(ctx, groups, layers))


FIGURE_LAYERS = 6  # at most this many layer columns in the figure (a deep network's first, last and between)


def _drawn(layers: list[str]) -> list[str]:
    if len(layers) <= FIGURE_LAYERS:
        return layers
    picks = sorted({round(i * (len(layers) - 1) / (FIGURE_LAYERS - 1)) for i in range(FIGURE_LAYERS)})
    return [layers[i] for i in picks]


def _table(ctx: Context, groups: dict[str, pd.DataFrame], layers: list[str]) -> pd.DataFrame:
    """Per network and layer: the runs' medians over training of ||G - G'|| and cos(G, G'), seed mean and range."""
    rows = []
    for bn, runs in groups.items():
        for layer in layers:
            row = {"network": STYLE[bn][1], "layer": layer, "n": len(runs)}
            for measure, label in (("l2", "||G - G'||"), ("cos", "cos(G, G')")):
                values = per_run(ctx.metrics, runs, f"ics/{measure}/{layer}")
                row[f"{label} median (mean)"] = f"{sum(values) / len(values):.4g}" if values else "–"
                row[f"{label} (min to max)"] = f"{min(values):.4g} to {max(values):.4g}" if values else "–"
            rows.append(row)
    return pd.DataFrame(rows)
