"""Networks of the paper's experiments, and the sparse input their evaluation reads."""

from bnrepro.models.mlp import MLP
from bnrepro.models.sparse import SparseRows

__all__ = ["MLP", "SparseRows"]
