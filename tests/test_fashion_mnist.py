"""Fashion-MNIST: tiny idx files written here and loaded through the real code; the real set when installed."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bnrepro.data import DataError, Dataset, FashionMNIST
from bnrepro.data.fashion_mnist import EXPECTED_SHA256, PACKAGE_FOLDER, default_root
from bnrepro.parts import ConfigError, load_part

REPO = Path(__file__).resolve().parent.parent
N_TRAIN, N_TEST = 12, 5
TRAIN_IMAGES, TEST_LABELS = "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def idx_content(array: np.ndarray, magic: int | None = None, dims: tuple[int, ...] | None = None) -> bytes:
    """An idx file's bytes, written here by hand (not by bnrepro.data.idx), with an optional wrong header."""
    dims = array.shape if dims is None else dims
    magic = 0x0800 | array.ndim if magic is None else magic
    return struct.pack(f">{1 + len(dims)}I", magic, *dims) + array.astype(np.uint8).tobytes()


def tiny_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    images = {n: rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8) for n in (N_TRAIN, N_TEST)}
    images[N_TRAIN][0, 0, :2] = (0, 255)  # both ends of the pixel range occur
    return {
        "train-images-idx3-ubyte": images[N_TRAIN],
        "train-labels-idx1-ubyte": (np.arange(N_TRAIN) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": images[N_TEST],
        "t10k-labels-idx1-ubyte": np.array([9, 0, 3, 7, 1], dtype=np.uint8),
    }


ARRAYS = tiny_arrays()
CONTENTS = {name: idx_content(a) for name, a in ARRAYS.items()}


class TinyFashionMNIST(FashionMNIST):
    """Fashion-MNIST's loader, sized and hashed for the tiny files these tests write."""

    train_size, test_size = N_TRAIN, N_TEST
    expected_sha256 = {name: hashlib.sha256(c).hexdigest() for name, c in CONTENTS.items()}


def write_files(folder: Path, contents: dict[str, bytes], gz: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in contents.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (folder / name).write_bytes(content)
    return folder


@pytest.fixture(params=["gz", "plain"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return write_files(tmp_path / request.param, CONTENTS, gz=request.param == "gz")


def flipped(content: bytes) -> bytes:
    data = bytearray(content)
    data[-1] ^= 0x01  # the last pixel or label: inside the payload, past the header
    return bytes(data)


def test_loads_images_as_pixel_over_255(root: Path) -> None:
    splits = TinyFashionMNIST(root=str(root)).load()
    assert splits.name == "Fashion-MNIST"
    for x, y, prefix, n in ((splits.train_x, splits.train_y, "train", N_TRAIN),
                            (splits.test_x, splits.test_y, "t10k", N_TEST)):
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        pixels = torch.from_numpy(ARRAYS[f"{prefix}-images-idx3-ubyte"]).reshape(n, 1, 28, 28)
        assert torch.equal(x, pixels.float() / 255)
        assert torch.equal(y, torch.from_numpy(ARRAYS[f"{prefix}-labels-idx1-ubyte"]).long())
    assert splits.train_x.min() == 0 and splits.train_x.max() == 1


def test_binarize_thresholds_pixel_over_255(root: Path) -> None:
    gray = TinyFashionMNIST(root=str(root)).load()
    for threshold in (0.5, 0.0):
        binary = TinyFashionMNIST(root=str(root), binarize=True, threshold=threshold).load()
        assert torch.equal(binary.train_x, (gray.train_x > threshold).float())
        assert torch.equal(binary.test_y, gray.test_y)


def test_gz_is_read_and_plain_only_when_gz_is_absent(tmp_path: Path) -> None:
    # A broken plain copy beside a good .gz is never read; without the .gz it is, and is refused.
    write_files(tmp_path, CONTENTS, gz=True)
    write_files(tmp_path, {TRAIN_IMAGES: flipped(CONTENTS[TRAIN_IMAGES])}, gz=False)
    TinyFashionMNIST(root=str(tmp_path)).load()
    (tmp_path / f"{TRAIN_IMAGES}.gz").unlink()
    with pytest.raises(DataError, match=rf"{tmp_path / TRAIN_IMAGES} is corrupted"):
        TinyFashionMNIST(root=str(tmp_path)).load()


@pytest.mark.parametrize("missing", [TRAIN_IMAGES, TEST_LABELS])
def test_missing_file_names_it_and_the_package(tmp_path: Path, missing: str) -> None:
    write_files(tmp_path, {k: v for k, v in CONTENTS.items() if k != missing}, gz=True)
    with pytest.raises(DataError, match=rf"{missing}\.gz .*not found: run `apt-get install dataset-fashion-mnist`"
                                        r", or set data\.root") as e:
        TinyFashionMNIST(root=str(tmp_path)).load()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", [TRAIN_IMAGES, TEST_LABELS])
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_flipped_byte_in_content_is_refused(tmp_path: Path, name: str, gz: bool) -> None:
    write_files(tmp_path, {**CONTENTS, name: flipped(CONTENTS[name])}, gz=gz)
    with pytest.raises(DataError, match=rf"{name}(\.gz)? is corrupted \(sha256 .*apt-get install --reinstall"):
        TinyFashionMNIST(root=str(tmp_path)).load()


@pytest.mark.parametrize("content, problem", [
    (idx_content(ARRAYS[TRAIN_IMAGES], magic=0x0D03), r"bad idx header \(3331, 12, 28, 28\)"),  # float, not ubyte
    (idx_content(ARRAYS[TRAIN_IMAGES], dims=(N_TRAIN, 14, 56)), r"bad idx header \(2051, 12, 14, 56\)"),
    (idx_content(ARRAYS[TRAIN_IMAGES][:-1]), r"bad idx header \(2051, 11, 28, 28\)"),
    (idx_content(ARRAYS[TRAIN_IMAGES])[:-1], r"truncated or padded \(9423 bytes, expected 9424\)"),
    (b"\x00\x00\x08", r"too short for an idx header \(3 bytes\)"),
], ids=["type", "dims", "count", "truncated", "stub"])
def test_bad_header_or_length_is_refused(tmp_path: Path, content: bytes, problem: str) -> None:
    # Hashes that trust the bad file: only the header and length checks stand between it and a load.
    class TrustingFashionMNIST(TinyFashionMNIST):
        expected_sha256 = {**TinyFashionMNIST.expected_sha256, TRAIN_IMAGES: hashlib.sha256(content).hexdigest()}

    write_files(tmp_path, {**CONTENTS, TRAIN_IMAGES: content}, gz=True)
    with pytest.raises(DataError, match=rf"{TRAIN_IMAGES}\.gz is not the expected idx file \({problem}"):
        TrustingFashionMNIST(root=str(tmp_path)).load()


def test_damaged_gzip_is_refused(tmp_path: Path) -> None:
    write_files(tmp_path, CONTENTS, gz=True)
    path = tmp_path / f"{TRAIN_IMAGES}.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=rf"{TRAIN_IMAGES}\.gz is unreadable \(not a complete gzip file"):
        TinyFashionMNIST(root=str(tmp_path)).load()


def test_config_file_names_the_class_and_checks_threshold(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    node = OmegaConf.load(REPO / "conf" / "data" / "fashion_mnist.yaml")
    monkeypatch.setenv("BNREPRO_FASHION_MNIST", str(tmp_path))
    cls, cfg = load_part(node, "data", Dataset)
    assert cls is FashionMNIST and (cfg.root, cfg.binarize, cfg.threshold) == (str(tmp_path), False, 0.5)
    node.threshold = 1.0
    with pytest.raises(ConfigError, match=r"data\.threshold=1\.0 \(allowed: 0 <= threshold < 1\)"):
        load_part(node, "data", Dataset)


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BNREPRO_FASHION_MNIST", str(tmp_path))
    assert default_root() == tmp_path and FashionMNIST().cfg.root == str(tmp_path)
    monkeypatch.delenv("BNREPRO_FASHION_MNIST")
    assert default_root() == PACKAGE_FOLDER == Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not all((PACKAGE_FOLDER / f"{n}.gz").is_file() for n in EXPECTED_SHA256),
                    reason="needs Debian's dataset-fashion-mnist")
def test_real_files_match_the_known_hashes() -> None:
    splits = FashionMNIST(root=str(PACKAGE_FOLDER)).load()
    assert splits.train_x.shape == (60000, 1, 28, 28) and splits.test_x.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(splits.train_y), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(splits.test_y), torch.full((10,), 1000))
    # Upstream's first training item is an ankle boot (9), its first test item too.
    assert int(splits.train_y[0]) == 9 and int(splits.test_y[0]) == 9
    assert splits.train_x.min() == 0 and splits.train_x.max() == 1
