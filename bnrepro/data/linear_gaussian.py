"""A synthetic regression task, y = A x on Gaussian x: the deep linear network's task in Santurkar et al. (2018).

x ~ N(0, I) of `dim` features and y = A x with A (outputs, dim) of N(0, 1) entries, so each target coordinate has
variance `dim`. A comes from `task_seed` alone and the samples from `task_seed + 1` and `+ 2`, never from the run's
seed: every run seed fits the same task on the same samples, and the seeds differ only in their networks' initial
weights. Generated on the CPU from its own generator (the same bits on any machine) and then moved to the device;
1,000 x 10 samples take well under a millisecond, so nothing is cached and nothing is downloaded.

The test split has its own samples of the same task, as many as the training split by default: its l2 loss says
whether the fit is A's or the 1,000 training points'. Its size changes only the evaluation's cost (one forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bnrepro.data.base import Dataset, Splits
from bnrepro.parts import check

# the generators' seeds after task_seed: A's, then the training samples', then the test samples'
TRAIN_SEED_OFFSET, TEST_SEED_OFFSET = 1, 2


@dataclass
class LinearGaussianConfig:
    dim: int = 10  # x's features, and y's: the DLN's 10 x 10 layers map R^10 to R^10
    outputs: int | None = None  # y's width; null: dim (A square)
    train_size: int = 1000  # Santurkar et al.'s 1,000 samples
    test_size: int = 1000
    task_seed: int = 0  # A and the samples; the run's `seed` never changes them

    def check(self) -> None:
        for key in ("dim", "train_size", "test_size"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")
        check(self.outputs is None or self.outputs > 0, "outputs", self.outputs, "null (= dim) or a positive integer")


def l2_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """outputs, targets (B, outputs) -> the mean over the batch of each sample's squared error summed over its
    outputs, mean_i ||f(x_i) - y_i||^2 (no 1/2). The sum over outputs keeps a sample's loss the squared distance
    whatever the width; the mean over samples keeps the loss and the learning rate independent of the batch size."""
    return (outputs - targets).square().sum(dim=1).mean()


class LinearGaussian(Dataset):
    Config = LinearGaussianConfig
    name = "linear Gaussian"
    regression = True

    cfg: LinearGaussianConfig

    def __init__(self, cfg: LinearGaussianConfig | None = None, **settings: Any) -> None:
        super().__init__(cfg, **settings)
        c = self.cfg
        self.input_shape, self.num_classes = (c.dim,), c.outputs or c.dim
        self.train_size, self.test_size = c.train_size, c.test_size

    def matrix(self) -> Tensor:
        """A, (outputs, dim), from task_seed alone."""
        generator = torch.Generator().manual_seed(self.cfg.task_seed)
        return torch.randn(self.num_classes, self.cfg.dim, generator=generator)

    def _samples(self, a: Tensor, n: int, offset: int) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(self.cfg.task_seed + offset)
        x = torch.randn(n, self.cfg.dim, generator=generator)  # (n, dim)
        return x, x @ a.T  # y (n, outputs)

    def load(self, device: torch.device | str = "cpu") -> Splits:
        a = self.matrix()
        train_x, train_y = self._samples(a, self.train_size, TRAIN_SEED_OFFSET)
        test_x, test_y = self._samples(a, self.test_size, TEST_SEED_OFFSET)
        return Splits(*(t.to(device) for t in (train_x, train_y, test_x, test_y)), self.name)

    @staticmethod
    def loss(outputs: Tensor, targets: Tensor) -> Tensor:
        return l2_loss(outputs, targets)

    @staticmethod
    def scores(outputs: Tensor, targets: Tensor) -> Tensor:
        """(NaN, the l2 loss): accuracy has no meaning for a regression, and a NaN keeps metrics.csv's columns."""
        return torch.stack([torch.full_like(outputs[0, 0], torch.nan), l2_loss(outputs, targets)])
