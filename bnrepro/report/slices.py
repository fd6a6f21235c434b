"""Which runs belong together: configurations, the base learning rate, and each figure's slice.

A configuration is every config value that varies across the run set except the seed (and
settings that cannot change the result). A figure compares runs along its own axes only; every
other varying key is pinned to a reference value so that, say, Figure 1 does not average an
lr-sweep's 30x runs into its "BN" curve.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pandas as pd

from bnrepro.config import COMPUTE_NEUTRAL
from bnrepro.report.thresholds import SAME_VALUE_REL_TOL

BN, LR, ACT, SEED = "model.bn", "optim.lr", "model.activation", "seed"
BN_ORDER = {"none": 0, "before": 1, "after": 2}
# settings that do not change what a run computes, so they never split a configuration; `name` and `variant` are
# labels: fig1's and lr_sweep's runs at the same settings are the same configuration
NEUTRAL = {SEED, "name", "variant", *COMPUTE_NEUTRAL}
NEUTRAL_PREFIXES = tuple(f"{key}." for key in COMPUTE_NEUTRAL)
# the paper's setting where an axis varies but a figure is not about it
PREFERRED = {ACT: "sigmoid", "model.bn_impl": "bnrepro"}


def same(a: Any, b: Any) -> bool:
    """Config equality that treats 0.1*3 == 0.3 and missing == missing."""
    if isinstance(a, float) and isinstance(b, float | int) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=SAME_VALUE_REL_TOL) or (math.isnan(a) and math.isnan(float(b)))
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    return a == b


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def matches(runs: pd.DataFrame, key: str, value: Any) -> pd.Series:
    if key not in runs:
        return pd.Series(False, index=runs.index)
    return runs[key].map(lambda v: same(v, value)).astype(bool)


def setting_keys(runs: pd.DataFrame, config_keys: list[str]) -> list[str]:
    """Config keys that can change what a run computes (seed and neutral settings left out)."""
    return [k for k in config_keys if k in runs and k not in NEUTRAL and not k.startswith(NEUTRAL_PREFIXES)]


def varying_keys(runs: pd.DataFrame, config_keys: list[str]) -> list[str]:
    return [k for k in setting_keys(runs, config_keys) if len(_distinct(runs[k])) > 1]


def duplicates(runs: pd.DataFrame, config_keys: list[str]) -> pd.Series:
    """True for each run after the first with the same settings and seed: a re-run, counted once."""
    keys = [*setting_keys(runs, config_keys), SEED]
    return runs[keys].map(lambda v: fmt_value(_hashable(v))).agg("|".join, axis=1).duplicated()


def constant_values(runs: pd.DataFrame, config_keys: list[str]) -> dict[str, Any]:
    return {k: runs[k].iloc[0] for k in config_keys if k in runs and len(_distinct(runs[k])) == 1}


def _distinct(values: pd.Series) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if not any(same(v, u) for u in out):
            out.append(v)
    return out


def default_lr() -> float | None:
    # the default config's rate is what "1x" means in the experiments; the report must still work
    # when the training code is absent or broken, so any import failure just means "unknown"
    try:
        from bnrepro.config import OptimConfig

        return float(OptimConfig().lr)
    except Exception:
        return None


def choose_base_lr(runs: pd.DataFrame, explicit: float | None) -> tuple[float | None, str]:
    """(the learning rate called 1x, how it was chosen) for the baseline and the xN rows."""
    if explicit is not None:
        return explicit, "given with --base-lr"
    if LR not in runs or runs[LR].isna().all():
        return None, f"no run records {LR}"
    lrs = [float(v) for v in runs[LR].dropna()]
    default = default_lr()
    if default is not None and any(same(v, default) for v in lrs):
        return default, "the default config's optim.lr (bnrepro.config.OptimConfig)"
    counts = Counter(lrs)
    top = max(counts.values())
    tied = sorted(v for v, c in counts.items() if c == top)
    how = "the most common optim.lr in the run set" + (" (a tie: the smallest)" if len(tied) > 1 else "")
    if default is not None:
        how += f"; the default config's {default:g} is not in the run set"
    return tied[0], how


def reference_slice(runs: pd.DataFrame, varying: list[str], axes: list[str],
                    base_lr: float | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The runs that differ only along `axes` (and seed), and the values the other keys were pinned to.

    Pinning goes key by key inside what is left, so a value is only chosen if some run still has it:
    the preferred value (base lr, sigmoid, our BN layer) when present, else the most common one.
    """
    preferred = {**PREFERRED, LR: base_lr}
    pinned: dict[str, Any] = {}
    for key in sorted((k for k in varying if k not in axes), key=lambda k: k not in preferred):
        left = _distinct(runs[key])
        want = preferred.get(key)
        value = next((v for v in left if same(v, want)), None) if want is not None else None
        if value is None:
            value = Counter(map(_hashable, runs[key])).most_common(1)[0][0]
        runs = runs[matches(runs, key, value)]
        # as the runs hold it: NaN (a setting this model lacks, shown "–") stays apart from a null setting
        pinned[key] = value if value is not None else runs[key].iloc[0]
    return runs, pinned


def _hashable(v: Any) -> Any:
    return None if _missing(v) else v


def short_name(key: str, keys: list[str]) -> str:
    """The last dotted part of `key` when that is unambiguous among `keys` (bn, lr), else all of it."""
    last = key.rsplit(".", 1)[-1]
    return last if sum(k.rsplit(".", 1)[-1] == last for k in keys) == 1 else key


def describe(values: dict[str, Any]) -> str:
    keys = list(values)
    return ", ".join(f"{short_name(k, keys)}={fmt_value(v)}" for k, v in values.items())


def fmt_value(v: Any) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "–"  # a setting this run's model or data set does not have (model.channels of an MLP)
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return "[" + ",".join(map(fmt_value, v)) + "]"
    return str(v)


def order_key(key: str, value: Any) -> tuple[int, float, str]:
    """Sort values the way a reader expects: bn none < before < after, numbers by size, missing last."""
    if _missing(value):
        return (2, 0.0, "")
    if key == BN:
        return (0, BN_ORDER.get(value, len(BN_ORDER)), str(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, fmt_value(value))


def fixed_by(runs: pd.DataFrame, keys: list[str], name: str = "variant") -> set[str]:
    """The keys whose value each configuration name (config `variant`, set by its recipe) decides: one value per
    name. A row named "BRN" need not also say model.norm=brn."""
    if name not in runs or runs.empty:
        return set()
    return {k for k in keys if runs.groupby(name)[k].agg(lambda v: v.map(fmt_value).nunique()).max() <= 1}


def configurations(runs: pd.DataFrame, varying: list[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """One (values of the varying keys, its runs) per configuration, in reading order (order_key)."""
    groups: list[tuple[dict[str, Any], pd.DataFrame]] = []
    for _, row in runs.iterrows():
        values = {k: row[k] for k in varying}
        if any(all(same(values[k], g[k]) for k in varying) for g, _ in groups):
            continue
        mask = pd.Series(True, index=runs.index)
        for k in varying:
            mask &= matches(runs, k, values[k])
        groups.append((values, runs[mask]))
    return sorted(groups, key=lambda g: [order_key(k, g[0][k]) for k in varying])
