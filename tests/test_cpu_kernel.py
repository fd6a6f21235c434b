"""The C++ kernels' build: where they cannot be built, BN and stacked models still train, on torch ops, and each
kernel says so once."""

import os
import subprocess
import sys

SCRIPT = """
import warnings
import torch
from bnrepro.models import MLP
from bnrepro.nn import BatchNorm1d, cpu_kernel
from bnrepro.models import StackedMLP
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    bn = BatchNorm1d(4)
    y = bn(torch.randn(6, 4, requires_grad=True))
    y.sum().backward()
    stacked = StackedMLP([MLP(bn="before"), MLP(bn="before")])
    losses = stacked.train_step(torch.rand(120, 784), torch.randint(0, 10, (120,)), torch.arange(120), [True, True],
                                max_loss=1e3)
print(cpu_kernel.kernel() is None, y.grad_fn.name(), len(losses), all(p.grad is not None for p in stacked.params))
for warning in caught:
    print(warning.message)
"""


def test_no_compiler_falls_back_to_torch_ops(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    # no c++ on PATH and an empty build cache: the build must fail, here, not find an earlier build
    env = {**os.environ, "PATH": str(empty), "TORCH_EXTENSIONS_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    summary, *messages = out.stdout.splitlines()
    assert summary.split() == ["True", "BatchNormFunctionBackward", "2", "True"]
    assert [m.split(" could not be built")[0] for m in messages] == [
        "bnrepro: the C++ kernel batchnorm_cpu.cpp", "bnrepro: the C++ kernel stacked_cpu.cpp"]
    assert all("torch ops instead" in m for m in messages)
