"""The C++ BN kernel's build: where it cannot be built, BN still works, on torch ops, and says so once."""

import os
import subprocess
import sys

SCRIPT = """
import warnings
import torch
from bnrepro.nn import BatchNorm1d, cpu_kernel
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    bn = BatchNorm1d(4)
    y = bn(torch.randn(6, 4, requires_grad=True))
    y.sum().backward()
print(cpu_kernel.kernel() is None, y.grad_fn.name(), len(caught))
print(caught[0].message if caught else "")
"""


def test_no_compiler_falls_back_to_torch_ops(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    # no c++ on PATH and an empty build cache: the build must fail, here, not find an earlier build
    env = {**os.environ, "PATH": str(empty), "TORCH_EXTENSIONS_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    summary, message = out.stdout.splitlines()
    assert summary.split() == ["True", "BatchNormFunctionBackward", "1"]
    assert message.startswith("bnrepro: the fused CPU BN kernel could not be built") and "torch ops" in message
