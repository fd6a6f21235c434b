"""Layers of the reproduction: Batch Normalization with a hand-written backward, its ghost-batch variant, Batch
Renormalization, lp normalisation and noisy BN's noise."""

from bnrepro.nn.batchnorm import BatchNorm1d, BatchNorm2d, batch_norm_stacked
from bnrepro.nn.ghost import GhostBatchNorm1d, GhostBatchNorm2d
from bnrepro.nn.lpnorm import LP_ORDERS, LpNorm1d, LpNorm2d
from bnrepro.nn.noise import BatchNoise
from bnrepro.nn.renorm import BatchRenorm1d, BatchRenorm2d

__all__ = ["LP_ORDERS", "BatchNoise", "BatchNorm1d", "BatchNorm2d", "BatchRenorm1d", "BatchRenorm2d",
           "GhostBatchNorm1d", "GhostBatchNorm2d", "LpNorm1d", "LpNorm2d", "batch_norm_stacked"]
