"""The report's figures: which runs each one compares, its caption, and the claims it checks.

Every figure pins the settings it is not about (slices.reference_slice) and says so in its
caption; a figure the run set cannot support comes back as Skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bnrepro.report import claims, draw
from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.slices import ACT, BN, LR, describe, matches, order_key, reference_slice
from bnrepro.report.stats import GRAD_COLUMN, curve, drift, layers, percentiles, stat
from bnrepro.report.tables import lr_claims

# every file stem a figure may be saved under; a new report clears them so none is left from an older one
STEMS = ("fig1a_test_accuracy", "fig1bc_percentiles", "percentiles_all_layers", "lr_sweep", "bn_placement",
         "grad_norms")
BAND = "Lines: mean over seeds; band: min-max over seeds; n: number of runs (seeds)."
LABELS = {"none": "no BN", "before": "BN"}


def _pinned(pinned: dict) -> str:
    return f" Runs with {describe(pinned)}." if pinned else ""


def _fig1_groups(runs: pd.DataFrame) -> list[draw.Group]:
    return [(bn, LABELS[bn], g) for bn in ("none", "before") if len(g := runs[matches(runs, BN, bn)])]


def _absent(groups: list[draw.Group]) -> list[str]:
    have = {bn for bn, _, _ in groups}
    return [f"no runs with bn={bn} in this slice" for bn in ("none", "before") if bn not in have]


def _early(metrics: pd.DataFrame, base: pd.DataFrame, bn: pd.DataFrame) -> tuple[int, float, float] | None:
    """(the first evaluation step at >= 20% of training both report, baseline's and BN's mean accuracy)."""
    a, b = curve(metrics, base, "test_acc"), curve(metrics, bn, "test_acc")
    common = sorted(set(a.index[a["count"] == len(base)]) & set(b.index[b["count"] == len(bn)]))
    if not common:
        return None
    step = next(s for s in common if s >= 0.2 * common[-1])
    return int(step), float(a.loc[step, "mean"]), float(b.loc[step, "mean"])


def fig1a(runs: pd.DataFrame, metrics: pd.DataFrame, varying: list[str], base_lr: float | None,
          out: Path) -> Section | Skipped:
    title = "Figure 1(a): test accuracy with and without BN"
    runs, pinned = reference_slice(runs, varying, [BN], base_lr)
    groups = _fig1_groups(runs)
    if not groups:
        return Skipped(title, "no runs with bn=none or bn=before")
    files = draw.save(draw.accuracy_figure(metrics, groups, "MNIST test accuracy"), out, "fig1a_test_accuracy")
    by_bn = {bn: g for bn, _, g in groups}
    base, bn = by_bn.get("none", runs.iloc[:0]), by_bn.get("before", runs.iloc[:0])
    early = _early(metrics, base, bn) if len(base) and len(bn) else None
    step, acc_base, acc_bn = early or (None, None, None)
    found = [claims.bn_ends_higher(stat(base["final_test_acc"]), stat(bn["final_test_acc"])),
             claims.bn_trains_faster(step, acc_base, acc_bn)]
    caption = ("Test accuracy on the 10k MNIST test images vs training step, as in the paper's Figure 1(a) "
               f"(y from 0.7, widened only if a curve ends lower). {BAND}{_pinned(pinned)}")
    return Section(title, caption, found, files, notes=_absent(groups))


def _percentile_section(title: str, stem: str, runs: pd.DataFrame, metrics: pd.DataFrame,
                        which: list[str], caption: str, out: Path) -> Section:
    groups = _fig1_groups(runs)
    rows = [(layer, percentiles(metrics, layer)) for layer in which]
    files = draw.save(draw.percentile_figure(metrics, groups, rows), out, stem)
    by_bn = {bn: g for bn, _, g in groups}
    checks = [claims.distribution_stable(layer, *(drift(metrics, by_bn[b], cols) if b in by_bn else None
                                                  for b in ("none", "before"))) for layer, cols in rows]
    return Section(title, caption, checks, files, notes=_absent(groups))


def fig1bc(runs: pd.DataFrame, metrics: pd.DataFrame, varying: list[str], base_lr: float | None,
           out: Path) -> list[Section | Skipped]:
    """Figure 1(b, c) for the last hidden layer, and the same picture for every hidden layer."""
    title = "Figure 1(b, c): activation-input percentiles of the last hidden layer"
    title_all = "Activation-input percentiles of every hidden layer"
    runs, pinned = reference_slice(runs, varying, [BN], base_lr)
    names = layers(metrics[metrics["run"].isin(runs["run"])])
    if not _fig1_groups(runs) or not names:
        why = "no runs with bn=none or bn=before" if names else "the runs track no act/<layer>/p<q> columns"
        return [Skipped(title, why), Skipped(title_all, why)]
    unit = f"unit {runs['tracking.unit'].iloc[0]}" if "tracking.unit" in runs else "the tracked unit"
    what = (f"Percentiles over the 10k test images of the input to the activation of {unit}, at each "
            "evaluation (with BN that input is the BN output gamma*xhat+beta). Panels in a row share one "
            "y scale: the paper's -2..2, widened where the data leave it. Drift below = max - min over "
            "the evaluations after step 0 (at step 0 BN's running statistics are not yet estimated) of the "
            f"median and of the outer percentiles' spread, seed mean. {BAND}{_pinned(pinned)}")
    last = _percentile_section(title, "fig1bc_percentiles", runs, metrics, [names[-1]],
                               f"Layer {names[-1]}, the paper's 'typical unit'. {what}", out)
    if len(names) == 1:
        return [last, Skipped(title_all, "one hidden layer only: Figure 1(b, c) above already shows it")]
    every = _percentile_section(title_all, "percentiles_all_layers", runs, metrics, names,
                                f"Layers {', '.join(names)}, first to last. {what}", out)
    return [last, every]


def lr_sweep(runs: pd.DataFrame, varying: list[str], base_lr: float | None, out: Path) -> Section | Skipped:
    title = "Learning-rate sweep"
    if LR not in varying:
        return Skipped(title, "the run set has a single learning rate")
    all_runs = runs
    runs, pinned = reference_slice(runs, varying, [LR, BN], base_lr)
    files = draw.save(draw.lr_figure(runs, base_lr), out, "lr_sweep")
    caption = ("Final (left) and best (right) test accuracy vs learning rate (log x; second tick line: "
               "multiple of the base lr). Points: mean over the runs that did not diverge; bars: min-max; "
               f"x at the bottom: diverged runs.{_pinned(pinned)}")
    return Section(title, caption, lr_claims(all_runs, varying, base_lr), files)


def _final_mean(runs: pd.DataFrame, bn: str, act: str) -> float | None:
    s = stat(runs[matches(runs, BN, bn) & matches(runs, ACT, act)]["final_test_acc"])
    return s.mean if s.n else None


def bn_placement(runs: pd.DataFrame, metrics: pd.DataFrame, varying: list[str], base_lr: float | None,
                 out: Path) -> Section | Skipped:
    title = "BN placement and activation"
    runs, pinned = reference_slice(runs, varying, [BN, ACT], base_lr)
    modes = sorted(runs[BN].unique(), key=lambda b: order_key(BN, b)) if BN in runs else []
    acts = list(dict.fromkeys(runs[ACT])) if ACT in runs else []
    if "after" not in modes and len(acts) < 2:
        return Skipped(title, "no bn=after runs and a single activation: Figure 1(a) covers none vs before")
    panels = [(f"activation={act}", [(bn, f"bn={bn}", g) for bn in modes
                                     if len(g := runs[matches(runs, BN, bn) & matches(runs, ACT, act)])])
              for act in acts]
    files = draw.save(draw.panels_figure(metrics, panels), out, "bn_placement")
    found = []
    if "sigmoid" in acts and len(acts) > 1:
        other = next(a for a in acts if a != "sigmoid")
        gaps = [_gap(runs, bn, "sigmoid", other) for bn in ("before", "none")]
        found.append(claims.bn_narrows_activation_gap("sigmoid", other, *gaps))
    notes = [f"{act}: mean final accuracy " + ", ".join(
        f"bn={bn} {claims.pct(_final_mean(runs, bn, act))}" for bn in modes) for act in acts]
    caption = ("Test accuracy vs step per BN placement (none, before the nonlinearity as in the paper, after "
               "it), one panel per activation. The paper only uses 'before' (Sec. 3.2), so 'after' has no "
               f"paper number to check against. {BAND}{_pinned(pinned)}")
    return Section(title, caption, found, files, notes=notes)


def _gap(runs: pd.DataFrame, bn: str, act: str, other: str) -> float | None:
    a, b = _final_mean(runs, bn, act), _final_mean(runs, bn, other)
    return None if a is None or b is None else abs(a - b)


def grad_norms(runs: pd.DataFrame, metrics: pd.DataFrame, varying: list[str], base_lr: float | None,
               out: Path) -> Section | Skipped:
    title = "Gradient norms of BN's gamma and beta"
    runs, pinned = reference_slice(runs, varying, [BN], base_lr)
    runs = runs[matches(runs, BN, "before")]
    rows = metrics[metrics["run"].isin(runs["run"])].dropna(axis=1, how="all")
    columns: dict[str, list[str]] = {}
    for c in rows.columns:
        if m := GRAD_COLUMN.match(c):
            columns.setdefault(m["param"], []).append(c)
    if runs.empty or not columns:
        return Skipped(title, "no bn=before runs with grad_norm/<param>/<layer> columns in this slice")
    files = draw.save(draw.grad_norm_figure(metrics, runs, columns, "BN"), out, "grad_norms")
    gamma = columns.get("gamma", [])
    trained = rows[rows["step"] > 0]  # step 0 has no gradient yet, by design
    finite = bool(np.isfinite(trained[gamma].to_numpy(dtype=float)).all())
    last = trained.groupby("step")[gamma].mean().dropna().tail(1)
    ratio = float(last.max(axis=1).iloc[0] / last.min(axis=1).iloc[0]) if len(last) else None
    caption = ("L2 norm of the loss gradient w.r.t. each BN layer's gamma and beta (log y). The paper has "
               "no such figure; it argues BN keeps gradients well scaled (Sec. 3.3). "
               f"{BAND}{_pinned(pinned)}")
    return Section(title, caption, [claims.gradients_well_scaled(ratio, finite)], files)
