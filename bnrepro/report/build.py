"""Run folders -> figures and report.md in one folder: load, drop re-runs, run every registered section, write.

What the report shows is up to the sections (bnrepro.report.sections); this module only prepares
their shared Context and assembles what they return.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from bnrepro.report import draw, provenance, sections, slices
from bnrepro.report.load import RunSet, load_runs
from bnrepro.report.markdown import Report, Section, Skipped, render, unique_claims
from bnrepro.report.names import data_name, model_name
from bnrepro.report.stats import has_accuracy

NUMBERS = "numbers.json"  # next to report.md: its claims and tables as data


def default_out(rs: RunSet) -> Path:
    """reports/<first sweep folder's name>, else reports/<experiment name>."""
    if rs.sweeps:
        return Path("reports") / rs.sweeps[0].name
    names = rs.runs["name"].dropna() if "name" in rs.runs else pd.Series(dtype=str)
    return Path("reports") / (str(names.iloc[0]) if len(names) else "report")


def _setup(runs: pd.DataFrame, config_keys: list[str], varying: list[str]) -> pd.DataFrame:
    """Every setting with its value; the ones that vary list their values (the run set's design)."""
    fixed = slices.constant_values(runs, slices.setting_keys(runs, config_keys))
    rows = [(k, slices.fmt_value(v), "") for k, v in fixed.items()]
    for key in [*varying, slices.SEED]:
        values = sorted({slices.fmt_value(v): v for v in runs[key]}.items(),
                        key=lambda kv: slices.order_key(key, kv[1]))
        rows.append((key, ", ".join(text for text, _ in values), "varies"))
    return pd.DataFrame(rows, columns=["setting", "value", ""])


def _overview(paths: list[Path], rs: RunSet, ctx: sections.Context, how: str) -> list[str]:
    runs, varying, base_lr = ctx.runs, ctx.varying, ctx.base_lr
    statuses = ", ".join(f"{s} {n}" for s, n in Counter(rs.runs["status"]).most_common())
    n_configs = len(slices.configurations(runs, varying))
    lines = [f"Loaded {len(rs.runs)} runs from {', '.join(map(str, paths))} ({len(rs.sweeps)} sweep "
             f"folder(s)); status: {statuses}",
             f"Used in figures and tables: {len(runs)} finished runs (completed or diverged) in {n_configs} "
             "configuration(s)" + (f", varying {', '.join(varying)}" if varying else ""),
             f"Model: {ctx.model}; data set: {ctx.data}"]
    if ctx.named:  # each configuration has its own rate; no one of them is "1x" for the whole run set
        lines.append(f"Configurations: {', '.join(ctx.named)} (each run's config `variant`, set by its recipe)")
    else:
        lines.append(f"Base learning rate (1x): {base_lr:g}, {how}" if base_lr is not None
                     else f"Base learning rate: unknown ({how})")
    if "wall_time_s" in runs and len(runs):
        # the K runs of a stack (hydra/launcher=vectorized) share one process and its wall time: count it once
        stacked = runs["vectorized.models"].fillna(1) if "vectorized.models" in runs else 1
        lines.append(f"Training wall time: {(runs['wall_time_s'] / stacked).sum() / 60:.1f} min over all runs "
                     "(a stack of models trained together counted once)")
    return lines


def _sections(ctx: sections.Context) -> list[Section | Skipped]:
    if ctx.runs.empty:
        return [Skipped("All figures and tables", "no finished runs")]
    entries = sections.registered()
    alone = [made for entry in entries if entry.alone and isinstance(made := entry.build(ctx), Section)]
    if alone:
        return [*alone, Skipped("The training sections", f"the runs measure, they do not train: "
                                f"{', '.join(s.title for s in alone)}")]
    entries = [entry for entry in entries if not entry.alone]
    if not ctx.accuracy:
        left_out = Skipped("The accuracy figures and tables (Figure 1, the learning-rate, BN-placement, divergence "
                           "and Sec. 4.2 sections)", "the runs fit a regression task: they measure a test loss, "
                           "not a test accuracy")
        return [item for entry in entries if entry.regression and (item := entry.build(ctx)) is not None] + [left_out]
    if not ctx.named:
        made = [entry.build(ctx) for entry in entries]
    else:
        left_out = Skipped("Figure 1, the learning-rate, BN-placement and divergence sections",
                           f"the runs are named configurations ({', '.join(ctx.named)}) that differ in several "
                           "settings at once, not a sweep over bn and lr")
        made = [*(entry.build(ctx) for entry in entries if not entry.axes), left_out]
    return [item for item in made if item is not None]  # None: a section with nothing to say about these runs


def _configuration_names(runs: pd.DataFrame) -> tuple[str, ...]:
    """The names of the run set's configurations (config `variant`) when there are several, in run order."""
    names = tuple(dict.fromkeys(str(v) for v in runs["variant"].dropna() if v)) if "variant" in runs else ()
    return names if len(names) > 1 else ()


def numbers(report: Report, ctx: sections.Context) -> dict[str, Any]:
    """report.md's claims, tables and notes as data, and each run's outcome: what scripts/readme_numbers.py
    quotes in the README."""
    columns = [*ctx.varying, slices.SEED, "status", "final_test_acc", "best_test_acc"]
    runs = ctx.runs[[c for c in columns if c in ctx.runs]]
    return {"title": report.title, "base_lr": ctx.base_lr, "commands": report.commands, "commits": report.commits,
            "claims": [dataclasses.asdict(c) for c in unique_claims(report)],
            "tables": {s.title: s.table.to_dict("records") for s in report.sections if s.table is not None},
            "notes": {s.title: s.notes for s in report.sections if s.notes},
            "runs": json.loads(runs.to_json(orient="records"))}


def build_report(paths: list[Path], out: Path | None = None, base_lr: float | None = None,
                 figure_seed: int = 0, formats: tuple[str, ...] = draw.FORMATS) -> Path:
    """Write report.md, numbers.json and the figures for the runs under `paths`; returns report.md's path.

    figure_seed: the seed whose networks Figure 1(b, c) draws. formats: the figures' file formats (png, pdf)."""
    rs = load_runs(paths)
    if rs.runs.empty:
        raise FileNotFoundError(f"no run folder (one with summary.json) under {', '.join(map(str, paths))}"
                                + "".join(f"\n  {p}" for p in rs.problems))
    out = out or default_out(rs)
    out.mkdir(parents=True, exist_ok=True)
    for stem in sections.stems():  # a figure this run set cannot make must not survive from an older report
        for suffix in (f".{f}" for f in draw.FORMATS):
            (out / f"{stem}{suffix}").unlink(missing_ok=True)

    runs = rs.finished
    dup = slices.duplicates(runs, rs.config_keys) if len(runs) else pd.Series(False, index=runs.index)
    problems = rs.problems + [f"same settings and seed as an earlier run, counted once: {r}"
                              for r in runs[dup]["run"]]
    runs = runs[~dup]
    metrics = rs.metrics[rs.metrics["run"].isin(runs["run"])]
    varying = slices.varying_keys(runs, rs.config_keys)
    lr, how = slices.choose_base_lr(runs, base_lr)
    named = runs if len(runs) else rs.runs  # with no finished run, the loaded ones still say what was trained
    ctx = sections.Context(runs, metrics, varying, lr, out, model_name(named), data_name(named), figure_seed,
                           _configuration_names(runs), has_accuracy(metrics), tuple(formats))
    items = _sections(ctx)
    names = sorted({str(n) for n in rs.runs["name"].dropna()}) if "name" in rs.runs else []
    report = Report(
        title=f"Batch Normalization reproduction report: {', '.join(names) or 'runs'}",
        overview=_overview(paths, rs, ctx, how), problems=problems,
        setup=_setup(runs, rs.config_keys, varying),
        sections=[i for i in items if isinstance(i, Section)],
        skipped=[i for i in items if isinstance(i, Skipped)],
        commands=[*provenance.commands([Path(r) for r in rs.runs["run"]], rs.sweeps), "# this report",
                  provenance.report_command(paths, out, base_lr, figure_seed)],
        versions=provenance.versions(rs.runs), commits=provenance.commits(rs.runs))
    path = out / "report.md"
    path.write_text(render(report, out))
    (out / NUMBERS).write_text(json.dumps(numbers(report, ctx), indent=1, default=str) + "\n")
    return path
