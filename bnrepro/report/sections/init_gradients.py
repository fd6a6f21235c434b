"""Gradients at initialisation against depth (experiment=init_gradients): per-layer weight-gradient norms of the
deep MLP (model=deep_mlp) at its initial weights, with and without BN, for each depth and activation.

Each run's numbers are the grad_norms probe's row at step 1: ||dL/dW|| of every hidden layer after the first
step's backward, before its update, so the gradient at the initial weights on the run's first batch. Per run, the
per-layer growth rate is exp(-slope) of a least-squares line through log ||dL/dW_l|| against the layer index l
(rate > 1: norms grow from the last layer to the first), and the ratio is ||dL/dW_1|| / ||dL/dW_L||. Seeds (each
another init and another first batch) are summarised only afterwards, each quantity over seeds of one depth.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bnrepro.report.claims import INCONCLUSIVE, NOT_REPRODUCED, PARTLY, REPRODUCED, UNTESTABLE, Claim
from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import data_name, model_name
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._shared import pinned_text
from bnrepro.report.slices import ACT, BN, matches, reference_slice
from bnrepro.report.stats import Interval, difference, mean_interval
from bnrepro.report.thresholds import CONFIDENCE, LEVEL_RATE

DEPTH = "model.depth"
LAYERS_STEM, GROWTH_STEM = "init_gradients_layers", "init_gradients_growth"
INIT_STEP = 1  # the probe's row after the first backward and before the first update: the initial weights
WHERE = "Yang et al. 2019, A mean field theory of batch normalization, Sec. 1 and 3"
FINDINGS = {
    "bn": ("In a deep fully connected network with BN and no skip connections, the gradient norms at initialisation "
           "grow exponentially from the last layer to the first."),
    "none": "Without BN they do not.",
}
LABELS = {"none": "no BN", "before": "BN"}
TITLE = "Gradients at initialisation against depth"
CI = f"{CONFIDENCE:.0%} CI"


@dataclasses.dataclass
class Group:
    """The runs of one activation, BN mode and depth: per run (seed), its layers' norms and their summaries."""

    norms: np.ndarray  # (runs, depth): ||dL/dW_l|| of hidden layer l = 1..depth
    log_rate: list[float]  # per run: -slope of log-norm against layer index
    log_ratio: list[float]  # per run: log(||dL/dW_1|| / ||dL/dW_depth||)

    def rate(self) -> Interval | None:
        iv = mean_interval(self.log_rate)
        return None if iv is None else Interval(*(math.exp(v) for v in (iv.estimate, iv.low, iv.high)))


def _per_run(rows: pd.DataFrame, depth: int) -> Group | None:
    columns = [f"grad_norm/weight/h{i}" for i in range(1, depth + 1)]
    if rows.empty or any(c not in rows for c in columns):
        return None
    norms = rows[columns].to_numpy(dtype=float)
    norms = norms[np.isfinite(np.log(norms)).all(axis=1)]  # a zero or overflowed gradient has no log-linear fit
    if not len(norms):
        return None
    index = np.arange(1, depth + 1, dtype=float)
    slopes = [np.polyfit(index, np.log(n), 1)[0] for n in norms] if depth > 1 else [math.nan] * len(norms)
    return Group(norms, [-float(s) for s in slopes], [float(np.log(n[0] / n[-1])) for n in norms])


def _groups(ctx: Context) -> tuple[dict[tuple[str, str, int], Group], dict]:
    """(act, bn, depth) -> its Group, from the runs that differ only along those axes; and what was pinned."""
    runs, pinned = reference_slice(ctx.runs, ctx.varying, [DEPTH, BN, ACT], ctx.base_lr)
    probe = ctx.metrics[ctx.metrics["step"] == INIT_STEP]
    out: dict[tuple[str, str, int], Group] = {}
    for (act, bn, depth), group in runs.groupby([ACT, BN, DEPTH], sort=False):
        found = _per_run(probe[probe["run"].isin(group["run"])], int(depth))
        if found is not None:
            out[(str(act), str(bn), int(depth))] = found
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1] != "none", kv[0][2]))), pinned


def _rate_text(iv: Interval | None) -> str:
    return "one seed, no interval" if iv is None else f"{iv.estimate:.3f} [{iv.low:.3f}, {iv.high:.3f}]"


def _claim(key: str, claim: str, found: str, verdict: str, rule: str) -> Claim:
    return Claim(WHERE, FINDINGS[key], claim, found, verdict, rule, paraphrased=True)


def _depths(by: dict[tuple[str, str, int], Group], act: str, mode: str) -> list[int]:
    """The depths with runs of this activation and BN mode, smallest first (one layer has no slope)."""
    return sorted(d for a, b, d in by if a == act and b == mode and d > 1)


def _bn_grows(act: str, by: dict[tuple[str, str, int], Group]) -> Claim:
    """With BN: the rate's interval wholly above 1 at every depth, and the ratio larger at the deepest depth."""
    claim = f"with BN ({act}), gradient norms grow exponentially from the last layer to the first"
    rule = (f"reproduced only if at every depth the {CI} (Student's t over seeds) of the per-layer growth rate lies "
            f"wholly above 1, and the {CI} Welch interval of log(first/last ratio) at the deepest minus the shallowest "
            "depth lies above 0 (thresholds.CONFIDENCE)")
    if not (depths := _depths(by, act, "before")):
        return _claim("bn", claim, f"no BN runs with {act}", UNTESTABLE, rule)
    rates = {d: by[(act, "before", d)].rate() for d in depths}
    found = "per-layer growth rate, mean and " + CI + ": " + "; ".join(
        f"depth {d}: {_rate_text(iv)}" for d, iv in rates.items())
    grows = [d for d, iv in rates.items() if iv is not None and iv.low > 1]
    if len(depths) < 2:
        found += "; one depth, so no growth of the ratio with depth to test"
        deeper = None
    else:
        deeper = difference(by[(act, "before", depths[-1])].log_ratio, by[(act, "before", depths[0])].log_ratio)
        if deeper is not None:
            found += (f"; log(first/last) at depth {depths[-1]} minus depth {depths[0]}: {deeper.points(1.0)} "
                      f"({CI} Welch)")
    if any(iv is None for iv in rates.values()) or deeper is None:
        verdict = UNTESTABLE
    else:
        parts = [len(grows) == len(depths), deeper.side() == "above"]
        verdict = REPRODUCED if all(parts) else PARTLY if any(parts) else (
            NOT_REPRODUCED if all(iv.high < 1 for iv in rates.values()) or deeper.side() == "below" else INCONCLUSIVE)
    return _claim("bn", claim, found, verdict, rule)


def _none_level(act: str, by: dict[tuple[str, str, int], Group]) -> Claim:
    """Without BN: the rate's interval inside [1/LEVEL_RATE, LEVEL_RATE] at every depth (level across layers)."""
    claim = f"without BN ({act}), gradient norms stay level from the last layer to the first"
    rule = (f"level at a depth when the {CI} of the per-layer growth rate lies within [1/{LEVEL_RATE:g}, "
            f"{LEVEL_RATE:g}] (thresholds.LEVEL_RATE); grows / vanishes when it lies wholly above / below 1; "
            "reproduced only if level at every depth, not reproduced if it grows or vanishes at every depth")
    if not (depths := _depths(by, act, "none")):
        return _claim("none", claim, f"no runs without BN with {act}", UNTESTABLE, rule)
    kinds, parts = {}, []
    for d in depths:
        iv = by[(act, "none", d)].rate()
        kinds[d] = ("untestable" if iv is None else "level" if iv.low >= 1 / LEVEL_RATE and iv.high <= LEVEL_RATE
                    else "grows" if iv.low > 1 else "vanishes" if iv.high < 1 else "unclear")
        bn = by.get((act, "before", d))
        versus = f", BN {_rate_text(bn.rate())}" if bn is not None else ""
        parts.append(f"depth {d}: {_rate_text(iv)} ({kinds[d]}{versus})")
    found = "per-layer growth rate without BN, mean and " + CI + ": " + "; ".join(parts)
    off = [d for d, k in kinds.items() if k in ("grows", "vanishes")]
    if "untestable" in kinds.values():
        verdict = UNTESTABLE
    elif all(k == "level" for k in kinds.values()):
        verdict = REPRODUCED
    elif len(off) == len(depths):
        verdict = NOT_REPRODUCED
    elif "level" in kinds.values():
        verdict = PARTLY
    else:
        verdict = INCONCLUSIVE
    return _claim("none", claim, found, verdict, rule)


def _band(ax, x: np.ndarray, values: np.ndarray, label: str, color: str, style: str) -> None:
    """values (seeds, points): mean line and min-max band over seeds."""
    ax.plot(x, values.mean(axis=0), style, color=color, label=label, lw=1.3)
    ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=color, alpha=0.2, lw=0)


def _layers_figure(by: dict[tuple[str, str, int], Group], acts: list[str], title: str) -> Figure:
    """Rows: activations; columns: no BN, BN. ||dL/dW_l|| against l for each depth (log y)."""
    modes = [m for m in ("none", "before") if any(b == m for _, b, _ in by)]
    depths = sorted({d for _, _, d in by})
    fig = Figure(figsize=(5 * len(modes), 3.6 * len(acts)), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(len(acts), len(modes), squeeze=False)
    for row, act in zip(axes, acts):
        for ax, mode in zip(row, modes):
            for i, depth in enumerate(depths):
                if (g := by.get((act, mode, depth))) is not None:
                    _band(ax, np.arange(1, depth + 1), g.norms, f"depth {depth} (n={len(g.norms)})", f"C{i}", "-")
            ax.set_yscale("log")
            ax.set_title(f"{act}, {LABELS.get(mode, mode)}")
            ax.set_xlabel("hidden layer (1 = first)")
            ax.set_ylabel("||dL/dW|| at init")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="x-small")
    return fig


def _growth_figure(by: dict[tuple[str, str, int], Group], acts: list[str], title: str) -> Figure:
    """One panel per activation: the first-to-last ratio against depth, no BN and BN (log y)."""
    fig = Figure(figsize=(5 * len(acts), 4))
    fig.suptitle(title)
    axes = fig.subplots(1, len(acts), squeeze=False)[0]
    for ax, act in zip(axes, acts):
        for mode, (color, style) in (("none", ("tab:blue", "--")), ("before", ("tab:red", "-"))):
            depths = [d for a, b, d in by if a == act and b == mode]
            seeds = min((len(by[(act, mode, d)].log_ratio) for d in depths), default=0)
            if depths and seeds:  # seeds beyond the smallest count are left out, so every point has as many
                ratios = np.exp(np.array([by[(act, mode, d)].log_ratio[:seeds] for d in depths]).T)
                _band(ax, np.array(depths), ratios, f"{LABELS[mode]} (n={seeds})", color, style)
        ax.set_yscale("log")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_title(act)
        ax.set_xlabel("depth (hidden layers)")
        ax.set_ylabel("||dL/dW_1|| / ||dL/dW_last||")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def _table(by: dict[tuple[str, str, int], Group]) -> pd.DataFrame:
    rows = []
    for (act, mode, depth), g in by.items():
        rate = g.rate()
        ratio = np.exp(g.log_ratio)
        rows.append({"activation": act, "network": LABELS.get(mode, mode), "depth": depth, "n": len(g.norms),
                     "growth rate per layer (mean)": "–" if rate is None else f"{rate.estimate:.3f}",
                     CI: "–" if rate is None else f"{rate.low:.3f} to {rate.high:.3f}",
                     "first/last ratio (geometric mean)": f"{float(np.exp(np.mean(g.log_ratio))):.3g}",
                     "min-max over seeds": f"{ratio.min():.3g} to {ratio.max():.3g}"})
    return pd.DataFrame(rows)


def _sigma_w(runs: pd.DataFrame) -> str:
    """", here 100 * 0.2^2 = 4" when every run has one width and one Gaussian init std."""
    keys = ("model.width", "model.init_std", "model.init")
    if any(k not in runs or runs[k].nunique() != 1 for k in keys) or runs["model.init"].iloc[0] != "gaussian":
        return ""
    width, std = float(runs[keys[0]].iloc[0]), float(runs[keys[1]].iloc[0])
    return f"; here {width:g} x {std:g}^2 = {width * std * std:g}"


@dataclasses.dataclass
class Study:
    """What both sections of this study read: each (activation, bn, depth)'s Group and how the slice was chosen."""

    by: dict[tuple[str, str, int], Group]
    acts: list[str]
    where: str  # "DeepMLP on MNIST"
    how: str  # the caption's account of the init and of the pinned settings


def _study(ctx: Context) -> Study | Skipped | None:
    """None for a run set that is not a study over model.depth; Skipped when it lacks the step-1 probe rows."""
    if DEPTH not in ctx.runs or ctx.runs[DEPTH].isna().all():
        return None
    runs = ctx.runs[ctx.runs[DEPTH].notna() & (matches(ctx.runs, BN, "none") | matches(ctx.runs, BN, "before"))]
    by, pinned = _groups(dataclasses.replace(ctx, runs=runs))
    if not by:
        return Skipped(TITLE, f"no step-{INIT_STEP} grad_norm/weight/<layer> rows (probes=[grad_norms], every=1)")
    how = ("With BN before the activation the init's scale changes neither the forward pass nor the ratio of two "
           "layers' gradients (Sec. 3.3); without BN it decides both: with N(0, s) weights and fan-in w a layer's "
           "sigma_w^2 is w*s^2, against the critical 1 (tanh) and 2 (ReLU) of mean-field theory"
           + _sigma_w(runs) + "." + pinned_text(pinned))
    return Study(by, list(dict.fromkeys(a for a, _, _ in by)), f"{model_name(runs)} on {data_name(runs)}", how)


MEASURED = (f"the grad_norms probe at step {INIT_STEP}: ||dL/dW|| of each hidden layer after the first backward, "
            "before the first update, so at the initial weights on each run's first batch")


@section(order=90, stems=(LAYERS_STEM,), alone=True)
def init_gradients_layers(ctx: Context) -> Section | Skipped | None:
    if not isinstance(study := _study(ctx), Study):
        return study
    # each activation's two claims stand apart: BN's growth may hold where the network without BN is not level
    found = [c for act in study.acts for c in (_bn_grows(act, study.by), _none_level(act, study.by))]
    caption = (f"Per-layer weight-gradient norms at initialisation ({MEASURED}), for each depth (log y); line: mean "
               "over seeds, band: min-max over seeds, n: seeds (each its own init and first batch). Growth rate: "
               "exp(-slope) of a least-squares line through log norm against layer index, per run; its log's mean "
               f"over seeds with a {CI} (Student's t), shown as rates. {study.how}")
    fig = _layers_figure(study.by, study.acts, f"||dL/dW|| per layer at init ({study.where})")
    return Section(f"{TITLE}: per-layer norms ({study.where})", caption, found, files=ctx.save(fig, LAYERS_STEM))


@section(order=91, stems=(GROWTH_STEM,), alone=True)
def init_gradients_growth(ctx: Context) -> Section | Skipped | None:
    if not isinstance(study := _study(ctx), Study):
        return study
    caption = (f"First-to-last ratio ||dL/dW_1|| / ||dL/dW_depth|| ({MEASURED}) against depth, log y; line: mean "
               "over seeds, band: min-max over seeds. Table: per (activation, network, depth) the growth rate per "
               f"layer (the log-linear fit's, mean and {CI} over seeds) and the ratio (geometric mean over seeds, "
               f"min-max). {study.how}")
    fig = _growth_figure(study.by, study.acts, f"First-to-last gradient ratio vs depth ({study.where})")
    return Section(f"{TITLE}: growth with depth ({study.where})", caption, files=ctx.save(fig, GROWTH_STEM),
                   table=_table(study.by))
