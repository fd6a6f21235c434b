"""The idx format of MNIST-style data sets (LeCun's `*-idx3-ubyte` / `*-idx1-ubyte`), and file hashing.

An idx file is a big-endian header, magic `0x0000 08 ndim` (0x08: unsigned bytes) then one uint32 per
dimension, followed by the uint8 payload in C order. Only uint8 idx files exist in these data sets, so any
other type byte is a bad header.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np

from bnrepro.atomic import atomic_write

UBYTE = 0x08
IDX_IMAGES, IDX_LABELS = UBYTE << 8 | 3, UBYTE << 8 | 1  # 2051 and 2049


class IdxFormatError(ValueError):
    """Bytes that are not the idx file expected; the message says what differs, for a one-line DataError."""


def idx_magic(ndim: int) -> int:
    return UBYTE << 8 | ndim


def idx_header(shape: tuple[int, ...]) -> bytes:
    """The header of a uint8 idx file holding an array of `shape`."""
    return struct.pack(f">{1 + len(shape)}I", idx_magic(len(shape)), *shape)


def idx_size(shape: tuple[int, ...]) -> int:
    """The exact size in bytes of a uint8 idx file of `shape`: header + payload."""
    return len(idx_header(shape)) + int(np.prod(shape))


def write_idx(path: Path, array: np.ndarray) -> str:
    """Write `array` (uint8) as an uncompressed idx file, atomically; return the file's sha256."""
    if array.dtype != np.uint8:
        raise TypeError(f"idx files here hold uint8, got {array.dtype}")
    header = idx_header(array.shape)
    payload = memoryview(np.ascontiguousarray(array)).cast("B")  # the array's bytes, not a copy
    atomic_write(path, lambda f: (f.write(header), f.write(payload)))
    digest = hashlib.sha256(header)
    digest.update(payload)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def read_idx_bytes(path: Path) -> bytearray:
    """A file's idx content, gunzipped when the name ends in `.gz`; writable, so tensors can share it.

    Raises OSError for an unreadable file and for a damaged gzip stream (EOFError and zlib.error become
    OSError here), so that callers catch one exception type for "this file cannot be read".
    """
    data = path.read_bytes()
    if path.suffix != ".gz":
        return bytearray(data)
    try:
        return bytearray(gzip.decompress(data))
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise OSError(f"not a complete gzip file ({type(e).__name__}: {e})") from e


def parse_idx(content: bytes | bytearray, shape: tuple[int, ...]) -> np.ndarray:
    """The uint8 array of `shape` that `content` holds, a view on its buffer; IdxFormatError otherwise.

    Checks the header and the exact length before the caller hashes the content, so that a wrong file
    gets a message that says what is wrong with it rather than only "the hash differs".
    """
    header = idx_header(shape)
    if len(content) < len(header):
        raise IdxFormatError(f"too short for an idx header ({len(content)} bytes)")
    if bytes(content[: len(header)]) != header:
        got = struct.unpack(f">{len(header) // 4}I", bytes(content[: len(header)]))
        raise IdxFormatError(f"bad idx header {got}, expected {(idx_magic(len(shape)), *shape)}")
    if len(content) != idx_size(shape):
        raise IdxFormatError(f"truncated or padded ({len(content)} bytes, expected {idx_size(shape)})")
    return np.frombuffer(content, dtype=np.uint8, offset=len(header)).reshape(shape)
