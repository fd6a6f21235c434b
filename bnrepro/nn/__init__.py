"""Layers of the reproduction: Batch Normalization with a hand-written backward."""

from bnrepro.nn.batchnorm import BatchNorm1d, BatchNorm2d, batch_norm_stacked

__all__ = ["BatchNorm1d", "BatchNorm2d", "batch_norm_stacked"]
