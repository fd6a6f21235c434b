"""Layers of the reproduction: Batch Normalization with a hand-written backward, its ghost-batch variant and Batch
Renormalization."""

from bnrepro.nn.batchnorm import BatchNorm1d, BatchNorm2d, batch_norm_stacked
from bnrepro.nn.ghost import GhostBatchNorm1d, GhostBatchNorm2d
from bnrepro.nn.renorm import BatchRenorm1d, BatchRenorm2d

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchRenorm1d", "BatchRenorm2d", "GhostBatchNorm1d", "GhostBatchNorm2d",
           "batch_norm_stacked"]
