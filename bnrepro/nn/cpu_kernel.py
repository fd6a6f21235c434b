"""The fused CPU kernels of batchnorm_cpu.cpp, compiled on first use and cached by torch.

The first call in a fresh environment compiles the file (about 20 s, with the machine's C++ compiler and
ninja); later processes load the cached library in ~10 ms. Where it cannot be built, BN falls back to
torch ops, with a warning: the same values to float rounding, about 1.15x slower.
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

SOURCE = Path(__file__).with_name("batchnorm_cpu.cpp")
# No FMA contraction and no -march=native: the same bits on every x86-64 machine that builds it.
CFLAGS = ["-O3", "-ffp-contract=off"]

enabled = True  # False: every BN call takes the torch-op path (tests compare the two)


@functools.cache
def _build() -> ModuleType | None:
    # torch.utils.cpp_extension warns at import when a CUDA build of torch finds no CUDA toolkit; CPU code needs none
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        if shutil.which("ninja") is None:  # torch runs `ninja` from PATH; the pip package ships one
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        from torch.utils.cpp_extension import load

        # One build per checkout and source version: torch's cache is keyed by name, and ninja rebuilds whenever
        # the source path in the cached build file differs, so two checkouts would keep rebuilding each other's.
        key = hashlib.sha1(f"{SOURCE.resolve()}\n{SOURCE.read_text()}\n{CFLAGS}".encode()).hexdigest()[:12]
        return load(f"bnrepro_batchnorm_cpu_{key}", [str(SOURCE)], extra_cflags=CFLAGS, verbose=False)
    except Exception as e:  # no compiler, no ninja, a read-only cache...: slower, not broken
        first_line = next(iter(str(e).strip().splitlines()), "")  # a failed build's message is its whole log
        warnings.warn(f"bnrepro: the fused CPU BN kernel could not be built ({type(e).__name__}: {first_line}); "
                      "BN runs on torch ops instead (same values to float rounding, ~1.15x slower steps)",
                      stacklevel=3)
        return None


def kernel() -> ModuleType | None:
    """The compiled module (forward, backward), or None where it is disabled or cannot be built."""
    return _build() if enabled else None
