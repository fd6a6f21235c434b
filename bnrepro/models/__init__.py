"""Models, each a part named by `conf/model/<name>.yaml`; base.py is the contract they keep."""

from bnrepro.models.base import Model, Stacked
from bnrepro.models.cnn import CNN
from bnrepro.models.dln import DLN
from bnrepro.models.mlp import MLP, DeepMLP, StackedMLP
from bnrepro.models.sparse import SparseRows

__all__ = ["CNN", "DLN", "DeepMLP", "MLP", "Model", "SparseRows", "Stacked", "StackedMLP"]
