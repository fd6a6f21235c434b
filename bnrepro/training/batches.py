"""Which training samples each step takes (`train.shuffle`), drawn from the model's own generator.

- `epoch`: a fresh permutation every epoch (EpochOrder), what the paper's "shuffle training examples more
  thoroughly" (Sec. 4.2.1) asks for;
- `fixed`: one permutation drawn once and reused every epoch: the same batches in the same order, so the same
  examples always meet in a mini-batch;
- `shards`: a fixed partition of the samples into shards of `shard_size`, the shards' order reshuffled each epoch
  but never their contents (a sharded input pipeline without within-shard shuffling; with shard_size a multiple of
  the batch size, every epoch has the same batches, in another order).

Separately, `train.batching=class_clustered` makes batches non-i.i.d. (ClassClusteredOrder): each batch holds
samples of at most `train.batch_classes` classes, where BN's batch statistics stop standing for the population's.

Every order draws from a CPU generator seeded by the run's seed alone, so a model's batches are the same whether it
trains alone, in a stack or on another device; `state()` and `load()` carry it through a checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class EpochOrder:
    """Shuffled epochs without replacement (60000 / 60 gives exactly 1000 steps an epoch; a last partial batch is
    dropped). Subclasses change only how an epoch's order is made (`next_epoch`)."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device) -> None:
        self.n, self.batch_size, self.device = n, batch_size, device
        self.steps_per_epoch = n // batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.perm: Tensor | None = None  # (N,) this epoch's order, on the device

    def batch(self, step: int) -> Tensor:
        """The sample indices (B,) of training step `step` (1-based), a view into this epoch's order."""
        k = (step - 1) % self.steps_per_epoch
        if k == 0:
            self.perm = self.next_epoch()
        return self.perm[k * self.batch_size:(k + 1) * self.batch_size]

    def next_epoch(self) -> Tensor:
        return torch.randperm(self.n, generator=self.generator).to(self.device)

    def state(self) -> dict[str, Any]:
        """Plain tensors only, so that a checkpoint holding it loads with weights_only=True."""
        return {"perm": None if self.perm is None else self.perm.cpu(), "generator": self.generator.get_state()}

    def load(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.perm = None if state["perm"] is None else state["perm"].to(self.device)


class FixedOrder(EpochOrder):
    """The first epoch's permutation (the same as EpochOrder's first epoch) in every epoch."""

    def next_epoch(self) -> Tensor:
        return super().next_epoch() if self.perm is None else self.perm


class ShardOrder(EpochOrder):
    """Shards of `shard_size` consecutive samples of one permutation drawn once (the last shard may be smaller);
    each epoch is the shards in a new order, each shard's contents and inner order fixed."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device, shard_size: int) -> None:
        super().__init__(n, batch_size, seed, device)
        self.shard_size = shard_size
        self.samples: Tensor | None = None  # (N,) the fixed permutation the shards cut, on the device

    def next_epoch(self) -> Tensor:
        if self.samples is None:
            self.samples = super().next_epoch()
        shards = self.samples.split(self.shard_size)
        order = torch.randperm(len(shards), generator=self.generator).tolist()
        return torch.cat([shards[i] for i in order])

    def state(self) -> dict[str, Any]:
        return {**super().state(), "samples": None if self.samples is None else self.samples.cpu()}

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.samples = None if state["samples"] is None else state["samples"].to(self.device)


class ClassClusteredOrder(EpochOrder):
    """Non-i.i.d. batches: each holds batch_size / classes samples of each of at most `classes` classes.

    Every epoch, each class's samples in a new order are cut into shards of batch_size / classes samples (a class's
    last, partial shard sits that epoch out), the shards of all classes are shuffled together, and each run of
    `classes` consecutive shards is one batch. So which classes meet in a batch is random, and an epoch sees all
    but a few samples of each class once."""

    def __init__(self, labels: Tensor, batch_size: int, seed: int, device: torch.device, classes: int) -> None:
        super().__init__(len(labels), batch_size, seed, device)
        self.shard = batch_size // classes
        labels = labels.cpu()
        self.members = [torch.nonzero(labels == c).flatten() for c in labels.unique().tolist()]  # per class
        self.steps_per_epoch = sum(len(m) // self.shard for m in self.members) // classes

    def next_epoch(self) -> Tensor:
        shards: list[Tensor] = []
        for members in self.members:
            shuffled = members[torch.randperm(len(members), generator=self.generator)]
            shards.extend(shuffled[:len(shuffled) // self.shard * self.shard].split(self.shard))
        order = torch.randperm(len(shards), generator=self.generator).tolist()
        return torch.cat([shards[i] for i in order]).to(self.device)


SHUFFLES = ("epoch", "fixed", "shards")
BATCHINGS = ("iid", "class_clustered")


def batch_order(shuffle: str, n: int, batch_size: int, seed: int, device: torch.device, shard_size: int = 0,
                batching: str = "iid", labels: Tensor | None = None, batch_classes: int = 1) -> EpochOrder:
    """The batch order `train.shuffle` and `train.batching` name over n samples; shard_size is read only by
    `shards`, labels and batch_classes only by class_clustered batching (which shuffles every epoch)."""
    if batching == "class_clustered":
        if labels is None:
            raise ValueError("class_clustered batching needs the training labels")
        return ClassClusteredOrder(labels, batch_size, seed, device, batch_classes)
    if batching != "iid":
        raise ValueError(f"unknown batching {batching!r}: one of {', '.join(BATCHINGS)}")
    if shuffle == "epoch":
        return EpochOrder(n, batch_size, seed, device)
    if shuffle == "fixed":
        return FixedOrder(n, batch_size, seed, device)
    if shuffle == "shards":
        return ShardOrder(n, batch_size, seed, device, shard_size)
    raise ValueError(f"unknown shuffle {shuffle!r}: one of {', '.join(SHUFFLES)}")
