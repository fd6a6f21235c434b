"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 28x28 grayscale images of clothing, 10 classes, 60k + 10k.

Nothing is downloaded. Debian's package `dataset-fashion-mnist` installs the four gzipped idx files in
/usr/share/datasets/fashion-mnist/; any folder holding those four files works as `data.root`, each file
gzipped (`<name>.gz`, preferred) or plain (`<name>`).

Every load checks each file's idx header and length, then the SHA-256 of its *uncompressed* content against
`EXPECTED_SHA256`. The uncompressed content is hashed, not the .gz, because it is what the experiments see,
while the compressed bytes depend on who compressed them (Debian's .gz files differ from upstream's).

No cache: reading, decompressing, hashing and converting the four files takes about 0.4 s on one core (gunzip
is 0.2 s of it), a small part of a run's start-up, so a verified uncompressed copy on disk would save little
and add a second copy that can go stale or be edited.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from bnrepro.data.base import AugmentOptions, DataError, Dataset, Splits
from bnrepro.data.idx import IdxFormatError, parse_idx, read_idx_bytes
from bnrepro.parts import check

PACKAGE = "dataset-fashion-mnist"
PACKAGE_FOLDER = Path("/usr/share/datasets/fashion-mnist")
# SHA-256 of each file's uncompressed idx content (header included), as in Debian's dataset-fashion-mnist.
EXPECTED_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
HOW_TO_GET = f"run `apt-get install {PACKAGE}`, or set data.root to a folder holding the four idx files"
HOW_TO_REPAIR = f"run `apt-get install --reinstall {PACKAGE}`, or set data.root to a folder holding good copies"


def default_root() -> Path:
    """`$BNREPRO_FASHION_MNIST`, else the Debian package's folder; the same rule as conf/data/fashion_mnist.yaml."""
    env = os.environ.get("BNREPRO_FASHION_MNIST")
    return Path(env).expanduser() if env else PACKAGE_FOLDER


def find_file(root: Path, name: str) -> Path:
    """`root/<name>.gz`, else the plain `root/<name>`; DataError naming the file when neither exists."""
    for path in (root / f"{name}.gz", root / name):
        if path.is_file():
            return path
    raise DataError(f"Fashion-MNIST file {root / name}.gz (or {name}) not found: {HOW_TO_GET}")


def read_verified(path: Path, shape: tuple[int, ...], expected_sha256: str) -> np.ndarray:
    """The uint8 array of `shape` in the idx file at `path`, after its header, length and hash are checked."""
    try:
        content = read_idx_bytes(path)
    except OSError as e:
        raise DataError(f"Fashion-MNIST file {path} is unreadable ({e}): {HOW_TO_REPAIR}") from e
    try:
        array = parse_idx(content, shape)
    except IdxFormatError as e:
        raise DataError(f"Fashion-MNIST file {path} is not the expected idx file ({e}): {HOW_TO_REPAIR}") from e
    if hashlib.sha256(content).hexdigest() != expected_sha256:
        raise DataError(f"Fashion-MNIST file {path} is corrupted (sha256 of its content differs from the "
                        f"known-good Fashion-MNIST): {HOW_TO_REPAIR}")
    return array


@dataclass
class FashionMNISTConfig(AugmentOptions):
    root: str = field(default_factory=lambda: str(default_root()))  # a folder holding the four idx files
    binarize: bool = False  # grayscale by default: clothing loses most of its detail at one threshold
    threshold: float = 0.5  # with binarize: pixel/255 > threshold -> 1

    def check(self) -> None:
        check(0.0 <= self.threshold < 1.0, "threshold", self.threshold, "0 <= threshold < 1")
        super().check()


class FashionMNIST(Dataset):
    """Fashion-MNIST from verified idx files: images pixel/255 as (N, 1, 28, 28) float32, labels int64."""

    Config = FashionMNISTConfig
    name = "Fashion-MNIST"
    input_shape = (1, 28, 28)
    num_classes = 10
    train_size = 60_000
    test_size = 10_000
    # What each file's uncompressed content hashes to; it fits train_size and test_size, so a subclass that
    # changes the sizes (a test's tiny files) brings its own hashes.
    expected_sha256: ClassVar[Mapping[str, str]] = EXPECTED_SHA256

    cfg: FashionMNISTConfig

    def load(self, device: torch.device | str = "cpu") -> Splits:
        root, device = Path(self.cfg.root).expanduser(), torch.device(device)
        train_x, train_y = self._split(root, "train", self.train_size, device)
        test_x, test_y = self._split(root, "t10k", self.test_size, device)
        return Splits(train_x, train_y, test_x, test_y, self.name)

    def _split(self, root: Path, prefix: str, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        images = self._read(root, f"{prefix}-images-idx3-ubyte", (n, *self.input_shape[1:]))
        labels = self._read(root, f"{prefix}-labels-idx1-ubyte", (n,))
        # Move the uint8 bytes (4x smaller than float32) once, then convert in place on the device.
        x = torch.from_numpy(images).to(device).to(torch.float32).div_(255).view(n, *self.input_shape)
        if self.cfg.binarize:
            x = x.gt_(self.cfg.threshold)
        return x, torch.from_numpy(labels).to(device).to(torch.int64)

    def _read(self, root: Path, name: str, shape: tuple[int, ...]) -> np.ndarray:
        return read_verified(find_file(root, name), shape, self.expected_sha256[name])
