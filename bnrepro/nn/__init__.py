"""Layers of the reproduction: Batch Normalization with a hand-written backward, and its ghost-batch variant."""

from bnrepro.nn.batchnorm import BatchNorm1d, BatchNorm2d, batch_norm_stacked
from bnrepro.nn.ghost import GhostBatchNorm1d, GhostBatchNorm2d

__all__ = ["BatchNorm1d", "BatchNorm2d", "GhostBatchNorm1d", "GhostBatchNorm2d", "batch_norm_stacked"]
