"""The report's sections: each module here registers its figures, tables and claims with `@section`.

A section is a function `build(ctx: Context) -> Section | Skipped | None`: a Section, a Skipped with the reason a
run set it applies to lacks what it needs, or None for a run set it has nothing to say about (Sec. 4.2's sections
in a Figure 1 report). Registering it is all it takes to appear in report.md: build.py runs every registered
section in `order`, and before each build deletes every file stem the sections declare, so a figure this run set
cannot make never survives from an older report. Importing this package imports all its modules, so their
decorators run.

    @section(order=55, stems=("my_figure",))
    def my_figure(ctx: Context) -> Section | Skipped:
        ...
        return Section("My figure", "caption", files=ctx.save(fig, "my_figure"))
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from bnrepro.report import draw
from bnrepro.report.markdown import Section, Skipped


@dataclass(frozen=True)
class Context:
    """What every section builds from; the same for all sections of one report."""

    runs: pd.DataFrame  # finished runs (completed or diverged), each setting and seed once
    metrics: pd.DataFrame  # their metrics.csv rows: evaluation points and probe rows (empty test_acc)
    varying: list[str]  # config keys that vary across `runs`, seed aside
    base_lr: float | None  # the learning rate called 1x
    out: Path  # the report's folder
    model: str  # the run set's model name(s), e.g. "MLP"; a slice's own come from report.names
    data: str  # the run set's data set name(s), e.g. "MNIST"
    figure_seed: int = 0  # the seed whose network Figure 1(b, c) draws (one network, one unit, never a seed mean)
    named: tuple[str, ...] = ()  # the configurations' names when the runs carry several (config `variant`, recipe/)
    accuracy: bool = True  # the runs measure test accuracy (False: a regression task's, judged by their loss)
    formats: tuple[str, ...] = draw.FORMATS  # the file formats of every figure

    def save(self, fig: Figure, stem: str) -> list[Path]:
        """Save `fig` as <out>/<stem>.png and .pdf (or `formats`); only a declared stem, so that the next build
        clears it."""
        if stem not in stems():
            raise ValueError(f"figure stem {stem!r} is not declared by any @section(stems=...)")
        return draw.save(fig, self.out, stem, self.formats)


Build = Callable[[Context], Section | Skipped | None]


@dataclass(frozen=True)
class Entry:
    name: str  # module.function: unique, and a re-import replaces rather than duplicates
    order: float  # place in the report; render() puts all figures before all tables whatever their order
    stems: tuple[str, ...]  # file stems the section may save figures under
    build: Build
    axes: bool  # compares runs along model.bn and optim.lr with every other setting pinned (see section())
    regression: bool = False  # has something to say about runs without test accuracy (see section())
    alone: bool = False  # where it has something to say, it is the whole report (see section())


_registry: dict[str, Entry] = {}


def _name(build: Build) -> str:
    return f"{build.__module__}.{build.__qualname__}"


def section(order: float, stems: tuple[str, ...] = (), axes: bool = False,
            regression: bool = False, alone: bool = False) -> Callable[[Build], Build]:
    """Register the decorated `build(ctx)` as a report section at `order`, saving figures only under `stems`.

    axes: the section reads the run set as a sweep over model.bn and optim.lr, pinning every other setting to one
    value (Figure 1, the lr sweep). Runs of several named configurations (recipes, e.g. Sec. 4.2's BN-x5) differ
    in many settings at once, so such a section would compare an arbitrary slice of them: it is left out there.
    regression: the section reads no test accuracy, so it also runs on a regression task's runs (whose accuracy is
    NaN); the others, built on accuracy, are left out there.
    alone: the section's runs are a measurement, not training (e.g. one step at the initial weights), so where it
    returns a Section no other section has anything to say: they are left out of that report.
    """

    def register(build: Build) -> Build:
        name = _name(build)
        taken = {s: e.name for e in _registry.values() if e.name != name for s in e.stems}
        if clash := [f"{s} (by {taken[s]})" for s in stems if s in taken]:
            raise ValueError(f"{name}: figure stems already declared: {', '.join(clash)}")
        _registry[name] = Entry(name, order, tuple(stems), build, axes, regression, alone)
        return build

    return register


def unregister(build: Build) -> None:
    """Remove a registered section, e.g. one a test added."""
    _registry.pop(_name(build), None)


def registered() -> list[Entry]:
    """Every registered section in report order (ties by name, so the order never depends on import order)."""
    return sorted(_registry.values(), key=lambda e: (e.order, e.name))


def stems() -> list[str]:
    """Every file stem any section may write: what a new build deletes first."""
    return [s for e in registered() for s in e.stems]


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
