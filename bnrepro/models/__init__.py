"""Networks of the paper's experiments."""

from bnrepro.models.mlp import MLP

__all__ = ["MLP"]
