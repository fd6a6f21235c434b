"""bnrepro's C++ CPU kernels, each compiled on first use and cached by torch.

batchnorm_cpu.cpp is the BN layer's (bnrepro/nn/batchnorm.py); bnrepro/models/stacked_cpu.cpp is a stacked
model's whole training step. Both include batchnorm_cpu.h. The first call in a fresh environment compiles a
kernel (20-40 s, with the machine's C++ compiler and ninja); later processes load the cached library in ~10 ms.
Where one cannot be built, its callers fall back to torch ops, with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import warnings
from pathlib import Path
from types import ModuleType

HEADER = Path(__file__).with_name("batchnorm_cpu.h")
BN_SOURCE = Path(__file__).with_name("batchnorm_cpu.cpp")
# No FMA contraction and no -march=native: the same bits on every x86-64 machine that builds them.
CFLAGS = ["-O3", "-ffp-contract=off"]

enabled = True  # False: every caller takes its torch-op path (tests compare the two)


@functools.cache
def build(source: Path, fallback: str) -> ModuleType | None:
    """The compiled `source`, or None (with one warning that says `fallback`, what runs instead) where it
    cannot be built."""
    # torch.utils.cpp_extension warns at import when a CUDA build of torch finds no CUDA toolkit; CPU code needs none
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        if shutil.which("ninja") is None:  # torch runs `ninja` from PATH; the pip package ships one
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        from torch.utils.cpp_extension import load

        # One build per checkout and source version: torch's cache is keyed by name, and ninja rebuilds whenever
        # the source path in the cached build file differs, so two checkouts would keep rebuilding each other's.
        text = f"{source.resolve()}\n{source.read_text()}\n{HEADER.read_text()}\n{CFLAGS}"
        key = hashlib.sha1(text.encode()).hexdigest()[:12]
        return load(f"bnrepro_{source.stem}_{key}", [str(source)], extra_cflags=CFLAGS, verbose=False)
    except Exception as e:  # no compiler, no ninja, a read-only cache...: slower, not broken
        first_line = next(iter(str(e).strip().splitlines()), "")  # a failed build's message is its whole log
        warnings.warn(f"bnrepro: the C++ kernel {source.name} could not be built ({type(e).__name__}: "
                      f"{first_line}); {fallback}", stacklevel=3)
        return None


def kernel() -> ModuleType | None:
    """The BN layer's compiled module (batch_norm), or None where it is disabled or cannot be built."""
    if not enabled:
        return None
    return build(BN_SOURCE, "BN runs on torch ops instead (same values to float rounding, ~1.15x slower steps)")
