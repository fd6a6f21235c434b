"""The data-set contract: what a run needs of a data set, and all it knows of one.

A data set is a subclass of `Dataset`, named in `conf/data/<name>.yaml` by `_target_`, with
- `Config`: its typed schema, a dataclass whose fields are the YAML file's keys (`check()` for ranges);
- `name`, `input_shape`, `num_classes`, `train_size`, `test_size`: known before anything loads, so that a config
  can be checked against them (a batch larger than the training set, a model of another input shape); read from an
  instance, since a data set whose Config sets them (linear_gaussian's dimension and sizes) sets them in __init__;
- `regression`: False for class labels (the default); True for real-valued targets (N, num_classes), where
  `num_classes` is the output width and whatever needs labels (accuracy, class-clustered batches, stacked
  training's cross-entropy) is refused or left out;
- `load(device)`: the four tensors, verified, on the device;
- `loss(outputs, targets)`: the task's training loss, a mean over the batch (default: cross-entropy over class
  labels); a regression data set overrides it with its own (e.g. an l2 loss);
- `scores(outputs, targets)`: what an evaluation reports, (test_acc, test_loss) (default: accuracy and mean
  cross-entropy); a regression data set's test_acc is NaN, so metrics.csv keeps its columns;
- optionally `augment(x, generator)`: a training batch with random distortions, which the training loop asks for
  when the config's `augment` is true (the default: random shifts, for image data sets whose Config subclasses
  `AugmentOptions`).
Nothing is ever downloaded: a data set reads files that a package or the user put on disk, and says in one
line what is missing and how to get it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from bnrepro.parts import check


class DataError(RuntimeError):
    """A data set's files are missing or broken; the message names the file and what to do."""


@dataclass(frozen=True)
class Splits:
    """A loaded data set, on one device."""

    train_x: Tensor  # (N, *input_shape) float32
    train_y: Tensor  # (N,) int64 class labels, or (N, outputs) float32 targets of a regression data set
    test_x: Tensor  # (M, *input_shape) float32
    test_y: Tensor  # (M,) or (M, outputs)
    name: str  # for figure titles and tables, e.g. "MNIST"


@dataclass
class AugmentOptions:
    """The training batches' distortions (Sec. 4.2's Inception trains on distorted images): fields of an image data
    set's Config. Off by default; the test set is never distorted."""

    augment: bool = False  # random shifts of every training image, each by its own offset
    shift: int = 2  # the largest shift, in pixels along each axis (the image zero-padded by it, randomly cropped)

    def check(self) -> None:
        check(self.shift > 0, "shift", self.shift, "a positive number of pixels")


def random_shift(x: Tensor, shift: int, generator: torch.Generator) -> Tensor:
    """x (B, C, H, W) -> each image moved by its own (dy, dx), uniform over -shift..shift on each axis, pixels moved
    past the border lost and the uncovered ones zero: a random H x W crop of the image zero-padded by `shift`.
    The offsets come from `generator` (a CPU one) whatever x's device, so a run's distortions are the same there."""
    b, c, h, w = x.shape
    # each crop's top-left corner in the padded image: (2, B, 1), rows then columns
    corner = torch.randint(0, 2 * shift + 1, (2, b, 1), generator=generator).to(x.device)
    rows = corner[0] + torch.arange(h, device=x.device)  # (B, H)
    cols = corner[1] + torch.arange(w, device=x.device)  # (B, W)
    padded = F.pad(x, (shift, shift, shift, shift))  # (B, C, H + 2 shift, W + 2 shift)
    cropped = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * shift))
    return cropped.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def accuracy_and_loss(logits: Tensor, y: Tensor) -> Tensor:
    """logits (N, C), labels y (N,) -> (2,): accuracy and mean cross-entropy, as (logits.argmax(1) == y)
    .float().mean() and F.cross_entropy(logits, y), the loss up to float rounding."""
    # log-softmax over the classes of (C, N): along N it vectorizes, ~15x faster than along rows of C = 10
    log_probs = F.log_softmax(logits.t().contiguous(), dim=0)
    return torch.stack([(logits.argmax(dim=1) == y).float().mean(), -log_probs.gather(0, y[None]).mean()])


class Dataset:
    Config: ClassVar[type]
    name: ClassVar[str]
    regression: ClassVar[bool] = False  # True: real-valued targets, no class labels
    # class attributes, or instance ones where the Config decides them
    input_shape: tuple[int, ...]  # one sample's shape, (C, H, W) for images
    num_classes: int  # classes, or a regression data set's output width
    train_size: int
    test_size: int

    def __init__(self, cfg: Any = None, **settings: Any) -> None:
        """cfg: a Config (default: the schema's defaults), with `settings` replacing single fields."""
        self.cfg = dataclasses.replace(cfg if cfg is not None else self.Config(), **settings)

    def load(self, device: torch.device | str = "cpu") -> Splits:
        raise NotImplementedError

    @staticmethod
    def loss(outputs: Tensor, targets: Tensor) -> Tensor:
        """outputs (B, num_classes) logits, targets (B,) labels -> the batch's mean cross-entropy."""
        return F.cross_entropy(outputs, targets)

    @staticmethod
    def scores(outputs: Tensor, targets: Tensor) -> Tensor:
        """outputs (N, num_classes), targets (N,) -> (2,): test accuracy and the loss (accuracy_and_loss)."""
        return accuracy_and_loss(outputs, targets)

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """A training batch (B, *input_shape) distorted, its randomness drawn from `generator` alone (a resumed
        run restores it); called only when the config's `augment` is true. The default shifts images by up to the
        config's `shift` pixels (random_shift)."""
        return random_shift(x, self.cfg.shift, generator)
