"""The data-set contract: what a run needs of a data set, and all it knows of one.

A data set is a subclass of `Dataset`, named in `conf/data/<name>.yaml` by `_target_`, with
- `Config`: its typed schema, a dataclass whose fields are the YAML file's keys (`check()` for ranges);
- `name`, `input_shape`, `num_classes`, `train_size`: known before anything loads, so that a config can be
  checked against them (a batch larger than the training set, a model of another input shape);
- `load(device)`: the four tensors, verified, on the device.
Nothing is ever downloaded: a data set reads files that a package or the user put on disk, and says in one
line what is missing and how to get it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor


class DataError(RuntimeError):
    """A data set's files are missing or broken; the message names the file and what to do."""


@dataclass(frozen=True)
class Splits:
    """A loaded data set, on one device."""

    train_x: Tensor  # (N, *input_shape) float32
    train_y: Tensor  # (N,) int64 class labels
    test_x: Tensor  # (M, *input_shape) float32
    test_y: Tensor  # (M,)
    name: str  # for figure titles and tables, e.g. "MNIST"


class Dataset:
    Config: ClassVar[type]
    name: ClassVar[str]
    input_shape: ClassVar[tuple[int, ...]]  # one sample's shape, (C, H, W) for images
    num_classes: ClassVar[int]
    train_size: ClassVar[int]
    test_size: ClassVar[int]

    def __init__(self, cfg: Any = None, **settings: Any) -> None:
        """cfg: a Config (default: the schema's defaults), with `settings` replacing single fields."""
        self.cfg = dataclasses.replace(cfg if cfg is not None else self.Config(), **settings)

    def load(self, device: torch.device | str = "cpu") -> Splits:
        raise NotImplementedError
