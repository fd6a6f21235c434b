"""Batch Renormalization (bnrepro.nn.BatchRenorm1d/2d): BN bit for bit where r_max = 1 and d_max = 0, the paper's
formulas (autograd through a direct implementation as the oracle) otherwise, and the r_max/d_max schedule."""

from __future__ import annotations

import pytest
import torch

from bnrepro.nn import BatchNorm1d, BatchNorm2d, BatchRenorm1d, BatchRenorm2d, cpu_kernel

SHAPES = {"1d": (BatchRenorm1d, BatchNorm1d, (32, 6)), "1d_len": (BatchRenorm1d, BatchNorm1d, (16, 6, 5)),
          "2d": (BatchRenorm2d, BatchNorm2d, (8, 6, 4, 4))}


@pytest.fixture(autouse=True, params=["cpu_kernel", "torch_ops"])
def bn_path(request, monkeypatch):
    """Both paths: r and d (and BN itself) from the C++ kernel on CPU, and from torch ops (CUDA's path)."""
    monkeypatch.setattr(cpu_kernel, "enabled", request.param == "cpu_kernel")


def _dims(x: torch.Tensor) -> tuple[int, ...]:
    return (0, *range(2, x.dim()))


def _channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, *([1] * (x.dim() - 2)))


def _reference(x, gamma, beta, running_mean, running_var, eps, r_max, d_max):
    """BRN's training forward as Ioffe (2017) writes it, r and d stopped for autograd."""
    dims = _dims(x)
    mean, var = x.mean(dims), x.var(dims, unbiased=False)
    std_b, std = (var + eps).sqrt(), (running_var + eps).sqrt()
    r = (std_b / std).clamp(1 / r_max, r_max).detach()
    d = ((mean - running_mean) / std).clamp(-d_max, d_max).detach()
    xhat = (x - _channel(mean, x)) / _channel(std_b, x) * _channel(r, x) + _channel(d, x)
    return _channel(gamma, x) * xhat + _channel(beta, x)


def _layer(cls, c: int, running: bool = True, **kwargs):
    layer = cls(c, **kwargs).double()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(c, generator=gen, dtype=torch.float64) + 0.5)
        layer.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
        if running:  # running statistics far enough from the batch's that some channels clip and some do not
            layer.running_mean.copy_(torch.randn(c, generator=gen, dtype=torch.float64) * 3)
            layer.running_var.copy_(torch.rand(c, generator=gen, dtype=torch.float64) * 8 + 0.05)
    return layer


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_with_r_max_1_and_d_max_0_it_is_our_bn_bit_for_bit(shape: str) -> None:
    brn_cls, bn_cls, size = SHAPES[shape]
    brn, bn = _layer(brn_cls, size[1], r_max=1.0, d_max=0.0).float(), _layer(bn_cls, size[1]).float()
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = (torch.randn(*size, generator=gen) * 2 + 1).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        dy = torch.randn(*size, generator=gen)
        y, y2 = brn(x), bn(x2)
        (y * dy).sum().backward()
        (y2 * dy).sum().backward()
        assert torch.equal(y, y2) and torch.equal(x.grad, x2.grad)
    for name in ("weight", "bias"):
        assert torch.equal(getattr(brn, name).grad, getattr(bn, name).grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(brn, name), getattr(bn, name))
    brn.eval(), bn.eval()
    x = torch.randn(*size, generator=gen)
    assert torch.equal(brn(x), bn(x))


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_forward_backward_and_running_statistics_match_the_papers_formulas_under_autograd(shape: str) -> None:
    brn_cls, _, size = SHAPES[shape]
    brn = _layer(brn_cls, size[1], r_max=1.5, d_max=0.5, warmup_steps=0, r_max_steps=0,
                 d_max_steps=0, momentum=0.2)
    gamma = brn.weight.detach().clone().requires_grad_()
    beta = brn.bias.detach().clone().requires_grad_()
    rm, rv = brn.running_mean.clone(), brn.running_var.clone()
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(*size, generator=gen, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    dy = torch.randn(*size, generator=gen, dtype=torch.float64)
    ref = _reference(x_ref, gamma, beta, rm, rv, brn.eps, 1.5, 0.5)
    # the running statistics here clip r for some channels and leave it for others, and likewise d
    std_b = (x.detach().var(_dims(x), unbiased=False) + brn.eps).sqrt() / (rv + brn.eps).sqrt()
    d = (x.detach().mean(_dims(x)) - rm) / (rv + brn.eps).sqrt()
    assert ((std_b > 1.5) | (std_b < 1 / 1.5)).any() and ((std_b < 1.5) & (std_b > 1 / 1.5)).any()
    assert (d.abs() > 0.5).any() and (d.abs() < 0.5).any()
    y = brn(x)
    (y * dy).sum().backward()
    (ref * dy).sum().backward()
    assert torch.allclose(y, ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(x.grad, x_ref.grad, rtol=1e-9, atol=1e-12)
    assert torch.allclose(brn.weight.grad, gamma.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(brn.bias.grad, beta.grad, rtol=1e-10, atol=1e-12)
    # the running statistics move as BN's: towards the batch mean and the unbiased variance
    m = x.numel() // size[1]
    mean, var = x.detach().mean(_dims(x)), x.detach().var(_dims(x), unbiased=False) * m / (m - 1)
    assert torch.allclose(brn.running_mean, 0.8 * rm + 0.2 * mean, rtol=1e-12)
    assert torch.allclose(brn.running_var, 0.8 * rv + 0.2 * var, rtol=1e-12)
    # r and d are constants: the gradient is BN's gradient for gamma * r, not that of the full expression
    full = x.detach().clone().requires_grad_()
    dims = _dims(full)
    mean_f, std_f = full.mean(dims), (full.var(dims, unbiased=False) + brn.eps).sqrt()
    r_full = (std_f / (rv + brn.eps).sqrt()).clamp(1 / 1.5, 1.5)
    d_full = ((mean_f - rm) / (rv + brn.eps).sqrt()).clamp(-0.5, 0.5)
    out = _channel(gamma.detach(), full) * ((full - _channel(mean_f, full)) / _channel(std_f, full)
                                            * _channel(r_full, full) + _channel(d_full, full))
    (out * dy).sum().backward()
    assert not torch.allclose(full.grad, x.grad, rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_on_the_kernel_brn_is_bns_one_autograd_node(shape: str) -> None:
    brn_cls, _, size = SHAPES[shape]
    brn = _layer(brn_cls, size[1], warmup_steps=0, r_max_steps=0, d_max_steps=0)
    y = brn(torch.randn(*size, dtype=torch.float64, requires_grad=True))
    leaves = [f.variable for f, _ in y.grad_fn.next_functions if f is not None and hasattr(f, "variable")]
    if cpu_kernel.enabled:  # gamma and beta straight into the kernel's node, which applies the chain rule
        assert y.grad_fn.name() == "torch::autograd::CppNode<bnrepro::BatchNormFunction>"
        assert any(v is brn.weight for v in leaves) and any(v is brn.bias for v in leaves)
    else:  # gamma' and beta': autograd's products between the parameters and BN's node
        assert y.grad_fn.name() == "BatchNormFunctionBackward"
        assert not any(v is brn.weight or v is brn.bias for v in leaves)


def test_in_inference_it_uses_the_running_statistics_as_bn() -> None:
    brn, bn = _layer(BatchRenorm2d, 6, warmup_steps=0, r_max_steps=0, d_max_steps=0), _layer(BatchNorm2d, 6)
    brn.eval(), bn.eval()
    x = torch.randn(4, 6, 3, 3, dtype=torch.float64)
    assert torch.equal(brn(x), bn(x))


def test_the_schedule_relaxes_r_max_and_d_max_linearly_after_the_warm_up() -> None:
    layer = BatchRenorm1d(4)  # the paper's: 1 and 0 up to 5000 steps, r_max 3 at 40k, d_max 5 at 25k
    assert layer.limits(0) == (1.0, 0.0) and layer.limits(5000) == (1.0, 0.0)
    assert layer.limits(15_000) == pytest.approx((1 + 2 * 10 / 35, 5 * 10 / 20))
    assert layer.limits(25_000) == pytest.approx((1 + 2 * 20 / 35, 5.0))
    assert layer.limits(40_000) == (3.0, 5.0) and layer.limits(10**6) == (3.0, 5.0)
    # the layer reads its own count of training batches, which a state_dict carries
    brn = _layer(BatchRenorm1d, 4, r_max=2.0, d_max=1.0, warmup_steps=1, r_max_steps=3, d_max_steps=3)
    x = torch.randn(10, 4, dtype=torch.float64) * 5 + 3
    outputs = []
    for _ in range(4):
        outputs.append(brn(x).detach())
    assert int(brn.num_batches_tracked) == 4 and "num_batches_tracked" in brn.state_dict()
    # the first batch (t = 0) and the second (t = 1, the warm-up's end) are BN's: r = 1, d = 0
    bn = _layer(BatchNorm1d, 4)
    assert torch.equal(outputs[0], bn(x).detach()) and torch.equal(outputs[1], bn(x).detach())
    assert not torch.allclose(outputs[3], bn(x).detach())


@pytest.mark.parametrize("kwargs, match", [({"r_max": 0.5}, "r_max >= 1"), ({"d_max": -1.0}, "d_max >= 0"),
                                           ({"warmup_steps": 50_000}, "must not exceed")])
def test_bad_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BatchRenorm1d(4, **kwargs)
