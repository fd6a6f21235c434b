"""The model and data set a run set trained, as titles and captions name them ("CNN", "Fashion-MNIST").

summary.json's `model_name`/`data_name` are the trainer's own display names; a run without them still
has the config's `model._target_`/`data._target_` (a class path, whose last part is the class name); a
run that records neither has a config with no model or data choice: the paper's MLP on MNIST.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

MODEL_DEFAULT, DATA_DEFAULT = "MLP", "MNIST"


def _name(row: dict[str, Any], display_key: str, target_key: str, default: str) -> str:
    display, target = row.get(display_key), row.get(target_key)
    if isinstance(display, str) and display:
        return display
    if isinstance(target, str) and target:
        return target.rsplit(".", 1)[-1]
    return default


def _names(runs: pd.DataFrame, display_key: str, target_key: str, default: str) -> str:
    """Each distinct name once, in run order: a slice normally has one; a mixed run set lists them all."""
    found = dict.fromkeys(_name(row, display_key, target_key, default) for row in runs.to_dict("records"))
    return ", ".join(found) or default


def model_name(runs: pd.DataFrame) -> str:
    return _names(runs, "model_name", "model._target_", MODEL_DEFAULT)


def data_name(runs: pd.DataFrame) -> str:
    return _names(runs, "data_name", "data._target_", DATA_DEFAULT)


def accuracy_title(runs: pd.DataFrame) -> str:
    """"Fashion-MNIST test accuracy (CNN)": what an accuracy figure of these runs shows."""
    return f"{data_name(runs)} test accuracy ({model_name(runs)})"
