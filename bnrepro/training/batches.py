"""Which training samples each step takes: shuffled epochs drawn from the model's own generator."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class EpochOrder:
    """Shuffled epochs without replacement (60000 / 60 gives exactly 1000 steps an epoch; a last partial batch is
    dropped). The permutation comes from a CPU generator seeded by the run's seed alone, so a model's batches are
    the same whether it trains alone, in a stack or on another device."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device) -> None:
        self.n, self.batch_size, self.device = n, batch_size, device
        self.steps_per_epoch = n // batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.perm: Tensor | None = None  # (N,) this epoch's order, on the device

    def batch(self, step: int) -> Tensor:
        """The sample indices (B,) of training step `step` (1-based), a view into this epoch's order."""
        k = (step - 1) % self.steps_per_epoch
        if k == 0:
            self.perm = torch.randperm(self.n, generator=self.generator).to(self.device)
        return self.perm[k * self.batch_size:(k + 1) * self.batch_size]

    def state(self) -> dict[str, Any]:
        """Plain tensors only, so that a checkpoint holding it loads with weights_only=True."""
        return {"perm": None if self.perm is None else self.perm.cpu(), "generator": self.generator.get_state()}

    def load(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.perm = None if state["perm"] is None else state["perm"].to(self.device)
