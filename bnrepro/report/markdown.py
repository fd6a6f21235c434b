"""report.md: what a report is made of (sections) and how it is written out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bnrepro.report.claims import Claim
from bnrepro.report.stats import Interval


@dataclass
class Section:
    """One figure or table with its caption and the paper's claims checked against it."""

    title: str
    caption: str  # what is drawn or tabulated, and how seeds are aggregated
    claims: list[Claim] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # a figure's PNG and PDF
    table: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)  # e.g. rows that the run set lacks


@dataclass
class Skipped:
    title: str
    reason: str


@dataclass
class Report:
    title: str
    overview: list[str]  # bullet lines: what was loaded, the base lr and how it was chosen
    problems: list[str]  # runs that could not be used, one line each
    setup: pd.DataFrame  # config values shared by every run, and the ones that vary
    sections: list[Section]
    skipped: list[Skipped]
    commands: list[str]
    versions: pd.DataFrame
    commits: str  # git commits from summary.json, with run counts when they differ


def cell(x: float | None) -> str:
    """A fraction as a table cell: percent with 2 decimals, no sign; the tests parse these back."""
    return "–" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def interval_cell(iv: Interval | None) -> str:
    """A mean's CONFIDENCE interval as a table cell, percent: "97.44 to 97.74"; "–" without one."""
    return "–" if iv is None else f"{cell(iv.low)} to {cell(iv.high)}"


def table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table; cells are printed as they are (format them first)."""
    cells = [[str(c) for c in df.columns]] + [[str(v) for v in row] for row in df.itertuples(index=False)]
    esc = [[c.replace("|", "\\|") for c in row] for row in cells]
    lines = ["| " + " | ".join(row) + " |" for row in esc]
    lines.insert(1, "|" + "---|" * len(df.columns))
    return "\n".join(lines)


def _section(s: Section, out: Path) -> list[str]:
    lines = [f"### {s.title}", ""]
    if s.files:
        lines += [f"![{s.title}]({s.files[0].relative_to(out)})", ""]
        lines += ["Files: " + ", ".join(f"[{p.name}]({p.relative_to(out)})" for p in s.files), ""]
    if s.table is not None:
        lines += [table(s.table), ""]
    lines += [f"*{s.caption}*", ""]
    lines += [f"- {c.sentence()}" for c in s.claims]
    lines += [f"- Note: {n}" for n in s.notes]
    return [*lines, ""]


def unique_claims(r: Report) -> list[Claim]:
    """Every section's claims in order, each once: a claim shown under two sections (the LR figure and the
    divergence table) is listed once."""
    return list({c.sentence(): c for s in r.sections for c in s.claims}.values())


def comparisons(claims: list[Claim]) -> pd.DataFrame | None:
    """claim x comparison -> verdict, for the claims judged both at a shared and at tuned learning rates."""
    judged: dict[str, dict[str, str]] = {}
    for c in claims:
        if c.comparison:
            judged.setdefault(c.claim, {})[c.comparison] = c.verdict
    kinds = sorted({k for by in judged.values() for k in by}, key=lambda k: (k.startswith("tuned"), k))
    paired = {claim: by for claim, by in judged.items() if len(by) > 1}
    if not paired:
        return None
    return pd.DataFrame([{"claim": claim, **{k: by.get(k, "–") for k in kinds}} for claim, by in paired.items()])


def render(r: Report, out: Path) -> str:
    lines = [f"# {r.title}", "", *[f"- {o}" for o in r.overview], ""]
    if r.problems:
        lines += ["**Runs left out:**", "", *[f"- {p}" for p in r.problems], ""]
    claims = unique_claims(r)
    if claims:
        rules = list(dict.fromkeys(c.rule for c in claims if c.rule))
        label = {rule: f"R{i}" for i, rule in enumerate(rules, 1)}
        glance = pd.DataFrame([(c.where, c.quoted(), c.claim, c.comparison or "–", c.found, c.verdict,
                                label.get(c.rule, "–")) for c in claims],
                              columns=["paper", "the paper says (PAPER.md)", "tested here", "comparison",
                                       "this run set", "verdict", "rule"])
        lines += ["## The paper's claims at a glance", "", table(glance), ""]
        lines += ["Rules (thresholds in bnrepro/report/thresholds.py):", "",
                  *[f"- {label[rule]}: {rule}." for rule in rules], ""]
        both = comparisons(claims)
        if both is not None:
            lines += ["Which comparison holds: each claim judged at one shared learning rate and with each "
                      "network at its own best learning rate (the tuned comparison below).", "", table(both), ""]
    lines += ["## Setup", "", table(r.setup), ""]
    figures = [s for s in r.sections if s.files]
    tables = [s for s in r.sections if not s.files]
    if figures:
        lines += ["## Figures", ""] + [line for s in figures for line in _section(s, out)]
    if tables:
        lines += ["## Tables", ""] + [line for s in tables for line in _section(s, out)]
    if r.skipped:
        lines += ["## Not made, and why", "", *[f"- **{s.title}**: {s.reason}" for s in r.skipped], ""]
    lines += ["## Reproduce", "", "Commands (from `multirun.yaml` and `.hydra/overrides.yaml`), then the one "
              "that built this report:", ""]
    lines += ["```bash", *r.commands, "```", ""]
    lines += ["Package versions (from summary.json):", "", table(r.versions), ""]
    lines += [f"Git commit (from summary.json): {r.commits}", ""]
    return "\n".join(lines)
