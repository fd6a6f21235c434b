"""Matplotlib drawing only, saved as PNG and PDF: accuracy curves are seed means with a min-max band; a tracked
unit's percentiles are drawn for one network at a time.

What to draw (which runs, which layers) is decided by the caller; these functions draw it in the
paper's axes where the paper has a figure. Figures are built without pyplot, so no interactive
backend is ever touched: PNG is rendered by Agg, PDF by matplotlib's PDF backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bnrepro.report.stats import curve

BN_STYLE = {"none": ("tab:blue", "--"), "before": ("tab:red", "-"), "after": ("tab:green", "-.")}
Group = tuple[str, str, pd.DataFrame]  # (bn mode, which picks the line style; legend label; its runs)


def title(fig: Figure) -> str:
    """What a figure shows in one line: its overall title, else its first panel's."""
    return fig.get_suptitle() or (fig.axes[0].get_title() if fig.axes else "")


FORMATS = ("png", "pdf")  # what a report saves each figure as (bnrepro-report --formats)


def save(fig: Figure, out: Path, stem: str, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """PNG and PDF (or those of `formats`), each carrying the figure's title as metadata, so a file opened alone
    says what it shows."""
    paths = [out / f"{stem}.{suffix}" for suffix in formats]
    for path in paths:
        # no creation date or software version in the file: the same runs give the same bytes
        metadata = {"CreationDate": None, "Producer": None} if path.suffix == ".pdf" else {"Software": None}
        fig.savefig(path, dpi=120, bbox_inches="tight", metadata={**metadata, "Title": title(fig)})
    return paths


def _band(ax: Axes, stats: pd.DataFrame, label: str, color: str, style: str = "-") -> None:
    ax.plot(stats.index, stats["mean"], style, color=color, label=label, lw=1.5)
    ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2, lw=0)


def _style(bn: str, i: int) -> tuple[str, str]:
    return BN_STYLE.get(bn, (f"C{i}", "-"))


def _accuracy_panel(ax: Axes, metrics: pd.DataFrame, groups: list[Group]) -> None:
    lowest_final = 1.0
    for i, (bn, label, runs) in enumerate(groups):
        stats = curve(metrics, runs, "test_acc")
        if stats.empty:
            continue
        _band(ax, stats, f"{label} (n={len(runs)})", *_style(bn, i))
        lowest_final = min(lowest_final, float(stats["mean"].iloc[-1]))
    # the paper's Figure 1(a) spans 0.7-1.0; widen it only when a curve would end below that
    ax.set_ylim(min(0.7, np.floor(lowest_final * 10) / 10), 1.0)
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")


def accuracy_figure(metrics: pd.DataFrame, groups: list[Group], title: str) -> Figure:
    """Figure 1(a): test accuracy over steps; groups are (bn mode, legend label, runs)."""
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    _accuracy_panel(ax, metrics, groups)
    ax.set_title(title)
    return fig


def panels_figure(metrics: pd.DataFrame, panels: list[tuple[str, list[Group]]], title: str) -> Figure:
    """Accuracy curves, one panel per (panel title, groups), e.g. one per activation, under `title`."""
    fig = Figure(figsize=(5 * len(panels), 4))
    fig.suptitle(title)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, groups) in zip(axes[0], panels, strict=True):
        _accuracy_panel(ax, metrics, groups)
        ax.set_title(title)
    low = min(ax.get_ylim()[0] for ax in axes[0])  # one y range, so panels compare at a glance
    for ax in axes[0]:
        ax.set_ylim(low, 1.0)
    return fig


def loss_figure(metrics: pd.DataFrame, groups: list[Group], columns: list[tuple[str, str]], title: str) -> Figure:
    """A regression task's loss over steps, log y, one panel per (column, panel title), e.g. test and training loss;
    groups are (bn mode, legend label, runs)."""
    fig = Figure(figsize=(5 * len(columns), 4))
    fig.suptitle(title)
    axes = fig.subplots(1, len(columns), squeeze=False, sharey=True)
    for ax, (column, panel_title) in zip(axes[0], columns, strict=True):
        for i, (bn, label, runs) in enumerate(groups):
            stats = curve(metrics, runs, column)
            if not stats.empty:  # a colour per configuration (several share a bn mode), the bn mode's line style
                _band(ax, stats, f"{label} (n={len(runs)})", f"C{i}", _style(bn, i)[1])
        ax.set_yscale("log")
        ax.set_title(panel_title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("l2 loss")
    axes[0][0].legend(fontsize="small")
    return fig


Panel = tuple[str, str]  # (panel title, the run folder whose network it draws)


def percentile_figure(metrics: pd.DataFrame, rows: list[tuple[list[Panel], list[str]]], title: str) -> Figure:
    """Figure 1(b, c): one network per panel, one line per percentile of its tracked unit over steps.

    rows: (panels, the percentile columns they draw), e.g. one row per layer or one per seed; a row shares one y
    scale so drift compares fairly. Nothing is averaged across runs: the tracked unit of one network is not the
    same unit as that of another seed's network, so a seed mean would describe no unit at all.
    """
    # constrained layout keeps the overall title clear of the panel titles at any number of rows
    width = max(len(panels) for panels, _ in rows)
    fig = Figure(figsize=(4.5 * width, 3.2 * len(rows)), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(len(rows), width, squeeze=False, sharex=True, sharey="row")
    for ax_row, (panels, columns) in zip(axes, rows, strict=True):
        low, high = -2.0, 2.0  # the paper's y range, widened to show drift that leaves it
        for ax, (panel_title, run) in zip(ax_row, panels, strict=False):
            mine = metrics[metrics["run"] == run]
            for i, column in enumerate(columns):
                points = mine[["step", column]].dropna() if column in mine else mine.iloc[:0]
                if points.empty:
                    continue
                ax.plot(points["step"], points[column], color=f"C{i}", lw=1.5, label=column.rsplit("/", 1)[-1])
                low, high = min(low, points[column].min()), max(high, points[column].max())
            ax.set_title(panel_title)
            ax.grid(alpha=0.3)
        for ax in ax_row[len(panels):]:
            ax.set_visible(False)
        pad = 0.05 * (high - low)
        ax_row[0].set_ylim(low - pad, high + pad)
        ax_row[0].set_ylabel("input to the activation")
        ax_row[0].legend(loc="upper left", fontsize="small")
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    return fig


def lr_figure(runs: pd.DataFrame, base_lr: float | None, title: str) -> Figure:
    """Final and best test accuracy vs learning rate per BN mode, under `title`; diverged runs as x at the bottom."""
    fig = Figure(figsize=(10, 4))
    fig.suptitle(title)
    axes = fig.subplots(1, 2, sharey=True)
    lrs = sorted(runs["optim.lr"].unique())
    bottom = 0.0
    for ax, column, title in zip(axes, ("final_test_acc", "best_test_acc"), ("final", "best"), strict=True):
        for i, (bn, group) in enumerate(runs.groupby("model.bn", sort=False)):
            color, style = _style(bn, i)
            ok = group[(group["status"] != "diverged") & group[column].notna()]
            stats = ok.groupby("optim.lr")[column].agg(["mean", "min", "max"])
            spread = np.vstack([stats["mean"] - stats["min"], stats["max"] - stats["mean"]])
            lo, hi = group.groupby("optim.lr").size().agg(["min", "max"])
            n = f"{lo}" if lo == hi else f"{lo}-{hi}"
            ax.errorbar(stats.index.to_numpy(), stats["mean"].to_numpy(), yerr=spread, fmt="o" + style,
                        color=color, capsize=3, label=f"bn={bn} (n={n} per lr)")
            bad = group[group["status"] == "diverged"]
            if len(bad):
                ax.plot(bad["optim.lr"], np.full(len(bad), bottom + 0.02), "x", color=color, ms=9, mew=2,
                        label=f"bn={bn}: diverged ({len(bad)})")
        ax.set_xscale("log")
        ax.set_xticks(lrs, [f"{lr:g}" + (f"\n{lr / base_lr:g}x" if base_lr else "") for lr in lrs])
        ax.minorticks_off()
        ax.set_ylim(bottom, 1.0)
        ax.set_xlabel("learning rate" + (f" (multiple of base {base_lr:g})" if base_lr else ""))
        ax.set_title(f"{title} test accuracy; bars: min-max over seeds")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(loc="lower left", fontsize="small")
    return fig


def grad_norm_figure(metrics: pd.DataFrame, runs: pd.DataFrame, columns: dict[str, list[str]],
                     title: str) -> Figure:
    """Gradient norms of BN's gamma and beta per layer over steps, log y; `columns`: param -> columns."""
    fig = Figure(figsize=(5 * len(columns), 4))
    axes = fig.subplots(1, len(columns), squeeze=False, sharey=True)
    for ax, (param, cols) in zip(axes[0], columns.items(), strict=True):
        for i, column in enumerate(cols):
            stats = curve(metrics, runs, column)
            stats = stats[stats["min"] > 0]  # log scale: a zero gradient (step 0) cannot be drawn
            _band(ax, stats, column.rsplit("/", 1)[-1], f"C{i}")
        ax.set_yscale("log")
        ax.set_title(f"|d loss / d {param}| ({title}, n={len(runs)})")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
    axes[0][0].set_ylabel("L2 norm of the gradient")
    return fig


def variants_figure(metrics: pd.DataFrame, groups: list[Group], title: str, zoom_from: float | None) -> Figure:
    """Sec. 4.2's Figure 2: test accuracy over steps, one line per named configuration (solid with BN, dashed
    without), on the whole accuracy range and, when `zoom_from` is given, zoomed to the range above it where the
    configurations that train part."""
    panels = 2 if zoom_from is not None else 1
    fig = Figure(figsize=(5.5 * panels, 4.2))
    fig.suptitle(title)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    curves = [(bn, f"{label} (n={len(runs)})", curve(metrics, runs, "test_acc")) for bn, label, runs in groups]
    for ax in axes:
        for i, (bn, label, stats) in enumerate(curves):
            if not stats.empty:
                _band(ax, stats, label, f"C{i}", "--" if bn == "none" else "-")
        ax.set_xlabel("training step")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0.0, 1.0)
    axes[0].set_title("all configurations")
    axes[0].legend(loc="lower right", fontsize=8)
    if zoom_from is not None:
        top = max(float(stats["max"].max()) for _, _, stats in curves if not stats.empty)
        axes[1].set_ylim(zoom_from, min(1.0, top + 0.005))
        axes[1].set_title(f"above {100 * zoom_from:.0f}%")
    return fig
