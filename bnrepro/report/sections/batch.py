"""BN's dependence on the batch (experiment=batch_size, batch_size_ghost, batch_size_cnn, bn_inference, non_iid):
accuracy against batch size, which statistics BN should use at inference, and non-i.i.d. batches; each section keeps
to the runs of its own design (`_study`), so the studies can be reported together or apart.

Rows are named configurations (the config's `variant`, from recipe/: "no BN", "BN", "BRN", "ghost BN (16)") at
one batch size, momentum or batching each, over seeds. A run's accuracy is its final test accuracy (the last
evaluation; a diverged run has none and counts in `diverged`); with the inference measurements
(bnrepro/training/bn_inference.py) also its final accuracy with precise statistics and with each test batch's own.
The claims come from later papers, which PAPER.md does not quote: each is restated in our words and tested by the
same rule as the paper's own claims (a Welch interval of the seed means, thresholds.CONFIDENCE).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bnrepro.report import claims
from bnrepro.report.markdown import Section, cell, interval_cell
from bnrepro.report.names import accuracy_title, data_name, model_name
from bnrepro.report.sections import Context, section
from bnrepro.report.slices import fixed_by, fmt_value
from bnrepro.report.stats import curve, difference, mean_interval
from bnrepro.report.thresholds import CONFIDENCE

VARIANT, BATCH, MOMENTUM, BATCHING = "variant", "train.batch_size", "model.bn_momentum", "train.batching"
NO_BN, BN, BRN, GHOST = "no BN", "BN", "BRN", "ghost BN (16)"
CONFIGURATIONS = (NO_BN, BN, BRN, GHOST)
PRECISE, BATCH_STATS, GAP = "test_acc_precise", "test_acc_batch", "train_eval_gap"
SIZE_STEM, INFERENCE_STEM = "batch_size_accuracy", "bn_inference_curves"
USUAL = {MOMENTUM: "0.1", BATCHING: "iid", BATCH: "60"}
DERIVED = ("train.steps", "train.eval_every")  # set by train.epochs and eval_every_epochs for each batch size
CI = f"{CONFIDENCE:.0%} CI"
IOFFE = "Ioffe 2017, Batch Renormalization, Sec. 1 and 4"
HOFFER = "Hoffer, Hubara & Soudry 2017, Sec. 4"
WU = "Wu & Johnson 2021, Rethinking 'Batch' in BatchNorm, Sec. 3-4"
FINDINGS = {
    "small": "BN's accuracy drops when the mini-batches are small, since its batch statistics grow noisy.",
    "brn": ("Batch Renormalization keeps most of BN's accuracy with small mini-batches, where BN's drops."),
    "ghost": ("With large batches, normalising over small ghost batches generalises better than over the whole "
              "batch."),
    "non_iid": ("With non-i.i.d. mini-batches BN's inference-mode accuracy collapses, and Batch Renormalization "
                "recovers much of it."),
    "precise": ("An EMA of batch statistics lags the moving weights when its momentum is small; precise population "
                "statistics, recomputed for the final weights, evaluate at least as well."),
    "gap": ("Training-mode (batch-statistics) accuracy falls below inference-mode accuracy more at small batches: "
            "the train/eval gap grows as the batch shrinks."),
}


def _final(metrics: pd.DataFrame, runs: pd.DataFrame, column: str) -> list[float]:
    """Each run's `column` at its last evaluation that measured it (runs without one left out)."""
    if column not in metrics:
        return []
    rows = metrics[metrics["run"].isin(runs["run"])][["run", "step", column]].dropna()
    return rows.sort_values("step").groupby("run")[column].last().astype(float).tolist()


def _finals(group: pd.DataFrame) -> list[float]:
    return group["final_test_acc"].dropna().astype(float).tolist()


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _claim(where: str, key: str, claim: str, higher: list[float], lower: list[float], names: tuple[str, str],
           measured: str = "final test accuracy") -> claims.Claim:
    return dataclasses.replace(claims.ends_higher(where, FINDINGS[key], *names, higher, lower, claim, measured),
                               paraphrased=True)


def _groups(runs: pd.DataFrame, keys: list[str]) -> dict[tuple, pd.DataFrame]:
    """The runs of each combination of `keys` present (values as fmt_value shows them), in a stable order."""
    out: dict[tuple, pd.DataFrame] = {}
    shown = runs[keys].map(_shown)
    for combo, index in shown.groupby(keys, sort=False).groups.items():
        out[combo if isinstance(combo, tuple) else (combo,)] = runs.loc[index]
    return out


def _study(ctx: Context, axes: dict[str, str]) -> pd.DataFrame:
    """The runs of this module's configurations (recipe/no_norm, batch_norm, batch_renorm, ghost_bn) that form one
    design along `axes` (key -> its usual value): every other setting that varies in the run set is pinned, except
    the ones each configuration fixes (model.norm, ...), the ones the axes decide (train.steps and eval_every, from
    epochs) and tracking. The pinned values are the most common among the runs off the axes' usual values, the runs
    that make the study; so studies reported together (whose duplicate runs the loader counts once) stay apart."""
    if VARIANT not in ctx.runs:
        return ctx.runs.iloc[:0]
    runs = ctx.runs[ctx.runs[VARIANT].isin(CONFIGURATIONS)]
    if runs.empty or any(a not in runs for a in axes):
        return runs.iloc[:0]
    fixed_by_variant = fixed_by(runs, ctx.varying, VARIANT)
    pinned = [k for k in ctx.varying if k not in axes and k not in fixed_by_variant and k not in DERIVED
              and not k.startswith("tracking.")]
    if not pinned:
        return runs
    shown = runs[pinned].map(_shown).apply(tuple, axis=1)
    off = runs[[any(_shown(r[a]) != usual for a, usual in axes.items()) for _, r in runs.iterrows()]]
    anchors = shown[off.index] if len(off) else shown
    # the most common; on a tie, the one with more settings at their usual values (momentum 0.1, iid, batch 60)
    counts = anchors.value_counts()
    chosen = max(counts.index, key=lambda c: (counts[c], sum(USUAL.get(k) == v for k, v in zip(pinned, c))))
    return runs[shown == chosen]


def _along(ctx: Context, axis: str, usual: str,
           label: str) -> tuple[pd.DataFrame, dict[tuple, pd.DataFrame], list[dict[str, object]]] | None:
    """One study's runs along `axis` (None unless it takes two values or more), grouped by (configuration, value),
    and their table rows (the value under `label`), in configuration order, then the value's (numbers numerically)."""
    named = _study(ctx, {axis: usual})
    if named.empty or axis not in named or named[axis].nunique() < 2:
        return None
    by = _groups(named, [VARIANT, axis])
    order = sorted(by, key=lambda k: (CONFIGURATIONS.index(k[0]), _order(k[1]), k[1]))
    return named, by, [{"configuration": variant, label: value, **_row(ctx, by[(variant, value)])}
                       for variant, value in order]


def _row(ctx: Context, group: pd.DataFrame) -> dict[str, object]:
    finals = _finals(group)
    precise, batch = _final(ctx.metrics, group, PRECISE), _final(ctx.metrics, group, BATCH_STATS)
    gap = _final(ctx.metrics, group, GAP)
    return {"n": len(group), "diverged": int((group["status"] == "diverged").sum()),
            "final mean (%)": cell(_mean(finals)), f"final {CI} (%)": interval_cell(mean_interval(finals)),
            "precise stats (%)": cell(_mean(precise)), "batch stats (%)": cell(_mean(batch)),
            "train/eval gap (points)": _points(gap)}


def _size_figure(ctx: Context, by: dict[tuple, pd.DataFrame], title: str) -> Figure:
    """Final test accuracy against batch size (log scale), one line per configuration: mean, band min-max."""
    fig = Figure(figsize=(6.5, 4.2))
    fig.suptitle(title)
    ax = fig.subplots()
    for i, name in enumerate(CONFIGURATIONS):
        points = sorted((int(size), _finals(g)) for (variant, size), g in by.items() if variant == name)
        points = [(b, v) for b, v in points if v]
        if not points:
            continue
        sizes = np.array([b for b, _ in points])
        means = np.array([sum(v) / len(v) for _, v in points])
        ax.plot(sizes, means, "o-" if name != NO_BN else "o--", color=f"C{i}", label=name)
        ax.fill_between(sizes, [min(v) for _, v in points], [max(v) for _, v in points], color=f"C{i}", alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (log scale)")
    ax.set_ylabel("final test accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return fig


@section(order=80, stems=(SIZE_STEM,))
def batch_size_accuracy(ctx: Context) -> Section | None:
    if (study := _along(ctx, BATCH, "60", "batch size")) is None:
        return None
    named, by, rows = study
    title = (f"BN's dependence on the batch size: final test accuracy at each batch size ({model_name(named)} on "
             f"{data_name(named)})")

    def finals(variant: str, size: int | None) -> list[float]:
        return _finals(by.get((variant, str(size)), named.iloc[:0])) if size is not None else []

    bn_sizes = sorted(int(s) for v, s in by if v == BN)
    both = sorted(set(bn_sizes) & {int(s) for v, s in by if v == BRN})
    ghost_sizes = sorted(set(bn_sizes) & {int(s) for v, s in by if v == GHOST})
    smallest, reference = (bn_sizes[0] if bn_sizes else None), (60 if 60 in bn_sizes else None)
    small_both = both[0] if both else None
    largest_ghost = ghost_sizes[-1] if ghost_sizes else None
    found = [
        _claim(IOFFE, "small", f"BN ends lower at batch {smallest} than at the paper's batch of 60",
               finals(BN, reference), finals(BN, smallest), ("BN at 60", _at(BN, smallest))),
        _claim(IOFFE, "brn", "BRN ends above BN at the smallest batch both ran"
               + (f" ({small_both})" if small_both else ""),
               finals(BRN, small_both), finals(BN, small_both), (_at(BRN, small_both), _at(BN, small_both))),
        _claim(HOFFER, "ghost", "ghost BN ends above BN at the largest batch both ran"
               + (f" ({largest_ghost})" if largest_ghost else ""),
               finals(GHOST, largest_ghost), finals(BN, largest_ghost),
               (_at(GHOST, largest_ghost), _at(BN, largest_ghost))),
    ]
    caption = ("Each configuration trained for the same number of epochs at every batch size, the learning rate "
               "scaled from batch 60 by optim.lr_scaling (the runs' setting). Final: test accuracy at the last "
               f"evaluation, mean and {CI} over seeds (Student's t); line: mean, band: min-max over seeds. Precise "
               "and batch stats: the same network at the last evaluation with precise population statistics and "
               "with each test batch's own (tracking.*), means over seeds. Train/eval gap: training-mode minus "
               "inference-mode accuracy on a fixed training subset, in points.")
    fig = _size_figure(ctx, by, f"{accuracy_title(named)} vs batch size")
    return Section(title, caption, found, files=ctx.save(fig, SIZE_STEM), table=pd.DataFrame(rows))


def _inference_figure(ctx: Context, by: dict[tuple, pd.DataFrame], sizes: list[str], momenta: list[str],
                      title: str) -> Figure:
    """Per batch size: test accuracy over training with the running statistics at each momentum (solid), and with
    precise and with the test batch's own statistics (dashed, dotted; the networks are the same at every momentum,
    so the momentum 0.1 runs' stand for all). Mean over seeds."""
    fig = Figure(figsize=(4.5 * len(sizes), 4.0))
    fig.suptitle(title)
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    for ax, size in zip(axes, sizes):
        for i, momentum in enumerate(momenta):
            stats = curve(ctx.metrics, by.get((size, momentum), ctx.runs.iloc[:0]), "test_acc")
            if not stats.empty:
                ax.plot(stats.index, stats["mean"], color=f"C{i}", label=f"EMA, momentum {momentum}")
        reference = by.get((size, "0.1"), by.get((size, momenta[0]), ctx.runs.iloc[:0]))
        for column, style, label in ((PRECISE, "--", "precise statistics"), (BATCH_STATS, ":", "test batch's own")):
            stats = curve(ctx.metrics, reference, column)
            if not stats.empty:
                ax.plot(stats.index, stats["mean"], style, color="black", label=label)
        ax.set_title(f"batch {size}")
        ax.set_xlabel("training step")
        ax.set_ylim(0.4, 1.0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize="small", loc="lower right")
    return fig


@section(order=82, stems=(INFERENCE_STEM,))
def bn_inference_statistics(ctx: Context) -> Section | None:
    named = _study(ctx, {MOMENTUM: "0.1", BATCH: "60"})
    if named.empty or PRECISE not in ctx.metrics or MOMENTUM not in named or named[MOMENTUM].map(
            _shown).nunique() < 2:
        return None
    title = ("Which statistics at inference: EMA vs precise vs the test batch's own, by momentum "
             "(experiment=bn_inference)")
    keys = [k for k in (BATCH, MOMENTUM) if k in named]
    by = _groups(named[named[VARIANT] == BN], keys)
    rows = []
    for combo, group in sorted(by.items(), key=lambda kv: tuple(_order(v) for v in kv[0])):
        ema, precise = _final(ctx.metrics, group, "test_acc"), _final(ctx.metrics, group, PRECISE)
        delta = difference(precise, ema)
        rows.append({**dict(zip(["batch size", "momentum"], combo)), "n": len(group),
                     "EMA (%)": cell(_mean(ema)), "precise (%)": cell(_mean(precise)),
                     "batch stats (%)": cell(_mean(_final(ctx.metrics, group, BATCH_STATS))),
                     "precise - EMA (points)": delta.points() if delta is not None else "–",
                     "train/eval gap (points)": _points(_final(ctx.metrics, group, GAP))})
    momenta = sorted({c[1] for c in by}, key=_order)
    sizes = sorted({c[0] for c in by}, key=_order)
    slow = momenta[0] if momenta else None
    size = "60" if "60" in sizes else (sizes[0] if sizes else None)
    group = by.get((size, slow), named.iloc[:0])
    small, large = (sizes[0], sizes[-1]) if sizes else (None, None)
    default = "0.1" if "0.1" in momenta else slow
    found = [
        _claim(WU, "precise", f"at momentum {slow} (batch {size}) precise statistics end above the EMA",
               _final(ctx.metrics, group, PRECISE), _final(ctx.metrics, group, "test_acc"),
               ("precise", "EMA")),
        _claim(WU, "gap", f"the train/eval gap (momentum {default}) is more negative at batch {small} than at "
               f"{large}", _final(ctx.metrics, by.get((large, default), named.iloc[:0]), GAP),
               _final(ctx.metrics, by.get((small, default), named.iloc[:0]), GAP),
               (f"batch {large}", f"batch {small}"), "final train/eval gap"),
    ]
    fig = _inference_figure(ctx, by, sizes, momenta, f"{accuracy_title(named)}: BN's statistics at inference")
    caption = ("BN's runs at each batch size and momentum of the running statistics (null: Algorithm 2's cumulative "
               "average). At the last evaluation: test accuracy with the running statistics (EMA), with precise "
               "statistics (the mean batch statistics of the final network over fixed training batches, "
               "tracking.precise_bn_batches) and with each test batch's own; means over seeds. precise - EMA: the "
               f"difference of the seed means with its {CI} (Welch). Train/eval gap: training-mode minus "
               "inference-mode accuracy on a fixed training subset (tracking.gap_samples), mean over seeds.")
    caption += (" Figure: test accuracy over training, mean over seeds, with the running statistics at each momentum "
                "(solid) and with precise and batch statistics (dashed, dotted; the same networks at every momentum).")
    return Section(title, caption, found, files=ctx.save(fig, INFERENCE_STEM), table=pd.DataFrame(rows))


@section(order=84)
def non_iid_batches(ctx: Context) -> Section | None:
    if (study := _along(ctx, BATCHING, "iid", "batching")) is None:
        return None
    named, by, rows = study
    title = "Non-i.i.d. batches: each batch from 2 classes (experiment=non_iid)"

    def finals(variant: str, batching: str) -> list[float]:
        return _finals(by.get((variant, batching), named.iloc[:0]))

    found = [
        _claim(IOFFE, "non_iid", "BN ends lower on class-clustered batches than on i.i.d. ones",
               finals(BN, "iid"), finals(BN, "class_clustered"), ("BN, iid", "BN, class_clustered")),
        _claim(IOFFE, "non_iid", "BRN ends above BN on class-clustered batches",
               finals(BRN, "class_clustered"), finals(BN, "class_clustered"),
               ("BRN, class_clustered", "BN, class_clustered")),
    ]
    caption = ("class_clustered: every training batch holds train.batch_size / train.batch_classes samples of each "
               "of train.batch_classes classes (bnrepro/training/batches.py); iid: the usual shuffled batches. "
               f"Final: test accuracy with the running statistics at the last evaluation, mean and {CI} over seeds. "
               "Precise and batch stats, train/eval gap: as in the batch-size table.")
    return Section(title, caption, found, table=pd.DataFrame(rows))


def _at(name: str, batch_size: int | None) -> str:
    return name if batch_size is None else f"{name} at {batch_size}"


def _shown(value: object) -> str:
    """A setting as the tables show it; an empty one is null (a momentum of None: the cumulative average)."""
    return "null" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt_value(value)


def _order(value: str) -> float:
    """Momenta and batch sizes in numeric order; null (the cumulative average) after every number."""
    try:
        return float(value)
    except ValueError:
        return math.inf


def _points(values: list[float]) -> str:
    return f"{100 * sum(values) / len(values):+.2f}" if values else "–"
