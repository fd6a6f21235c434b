"""lp normalisation (Santurkar et al. 2018, Sec. 4; bnrepro/nn/lpnorm.py): the layers against a float64 autograd
reference of their formula, 1d and 2d, training and inference, running statistics; the models and config around
them."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import validated

from bnrepro import nn as bnn
from bnrepro.models import MLP
from bnrepro.models.cnn import CNN
from bnrepro.parts import ConfigError

SHAPES = {"1d": (40, 6), "2d": (5, 3, 4, 4)}
LAYERS = {"1d": bnn.LpNorm1d, "2d": bnn.LpNorm2d}
EPS = 1e-5


def _scale(centred: torch.Tensor, p: float, dims: list[int]) -> torch.Tensor:
    """The reference "average lp norm" of each unit's centred values, written out per p."""
    if p == 1:
        return centred.abs().mean(dims, keepdim=True)
    if p == 2:
        return centred.square().mean(dims, keepdim=True).sqrt()
    return centred.abs().amax(dims, keepdim=True)


def _reference(x, gamma, beta, p, mean=None, scale=None):
    """gamma * (x - mean) / (scale + eps) + beta, with the batch's mean and scale unless given (inference)."""
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, -1, *[1] * (x.dim() - 2)]
    if mean is None:
        mean = x.mean(dims, keepdim=True)
        scale = _scale(x - mean, p, dims)
    else:
        mean, scale = mean.view(shape), scale.view(shape)
    return gamma.view(shape) * (x - mean) / (scale + EPS) + beta.view(shape), mean.flatten(), scale.flatten()


def _inputs(shape: tuple[int, ...], seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 3 + 1
    c = shape[1]
    return x, torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g), torch.randn(shape, generator=g)


def _layer(kind: str, p: float, gamma: torch.Tensor, beta: torch.Tensor, momentum: float | None = 0.1):
    layer = LAYERS[kind](len(gamma), p, eps=EPS, momentum=momentum)
    with torch.no_grad():
        layer.weight.copy_(gamma)
        layer.bias.copy_(beta)
    return layer


def _grads(out: torch.Tensor, dy: torch.Tensor, *leaves: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(out, leaves, dy))


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("norm", bnn.LP_ORDERS)
def test_training_forward_backward_and_running_statistics_match_the_formula(kind: str, norm: str) -> None:
    p = bnn.LP_ORDERS[norm]
    x, gamma, beta, dy = _inputs(SHAPES[kind], 0)
    layer = _layer(kind, p, gamma, beta)
    xl = x.clone().requires_grad_()
    y = layer(xl)
    got = _grads(y, dy, xl, layer.weight, layer.bias)

    x64, g64, b64 = (t.double().requires_grad_() for t in (x, gamma, beta))
    ref, mean, scale = _reference(x64, g64, b64, p)
    want = _grads(ref, dy.double(), x64, g64, b64)
    torch.testing.assert_close(y, ref.float(), rtol=1e-5, atol=1e-5)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b.float(), rtol=1e-4, atol=1e-5)
    # the running statistics moved from (0, 1) by momentum 0.1 towards the batch's mean and scale
    torch.testing.assert_close(layer.running_mean, 0.1 * mean.detach().float())
    torch.testing.assert_close(layer.running_scale, 0.9 + 0.1 * scale.detach().float())
    assert int(layer.num_batches_tracked) == 1


@pytest.mark.parametrize("kind", SHAPES)
def test_inference_uses_the_running_statistics(kind: str) -> None:
    x, gamma, beta, dy = _inputs(SHAPES[kind], 1)
    layer = _layer(kind, math.inf, gamma, beta, momentum=None)  # None: the cumulative average
    batches = [_inputs(SHAPES[kind], seed)[0] for seed in (2, 3)]
    for batch in batches:
        layer(batch)
    stats = [_reference(b.double(), gamma.double(), beta.double(), math.inf)[1:] for b in batches]
    mean, scale = ((stats[0][i] + stats[1][i]) / 2 for i in (0, 1))  # the plain average of the two batches
    torch.testing.assert_close(layer.running_mean, mean.float())
    torch.testing.assert_close(layer.running_scale, scale.float())

    layer.eval()
    before = [t.clone() for t in layer.buffers()]
    xl = x.clone().requires_grad_()
    y = layer(xl)
    x64 = x.double().requires_grad_()
    ref = _reference(x64, gamma.double(), beta.double(), math.inf, layer.running_mean.double(),
                     layer.running_scale.double())[0]
    torch.testing.assert_close(y, ref.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_grads(y, dy, xl)[0], _grads(ref, dy.double(), x64)[0].float())
    assert all(torch.equal(a, b) for a, b in zip(before, layer.buffers()))  # nothing moved in inference


def test_l2_is_bn_with_eps_on_the_scale() -> None:
    """s_2 is BN's biased standard deviation: without eps the two layers agree (outputs and input gradients)."""
    x, gamma, beta, dy = _inputs(SHAPES["2d"], 4)
    lp, bn = bnn.LpNorm2d(3, 2.0, eps=0.0), bnn.BatchNorm2d(3, eps=0.0)
    outs = []
    for layer in (lp, bn):
        xl = x.clone().requires_grad_()
        y = layer(xl)
        outs.append((y, _grads(y, dy, xl)[0]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lp.running_mean, bn.running_mean)


def test_a_unit_without_spread_stays_finite() -> None:
    layer = bnn.LpNorm1d(2, 2.0)
    x = torch.tensor([[1.0, 0.0], [1.0, 2.0]], requires_grad=True)  # unit 0: both samples equal
    y = layer(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all() and y[:, 0].eq(0).all()


@pytest.mark.parametrize("bn", ["before", "after"])
def test_the_mlp_and_the_cnn_take_lp_layers_in_bns_place(bn: str) -> None:
    mlp, cnn = MLP(bn=bn, norm="l1", hidden=[8, 8]), CNN(bn=bn, norm="linf", channels=[4, 4], hidden=[8])
    assert [type(h.norm) for h in mlp.hidden] == [bnn.LpNorm1d] * 2
    assert [type(layer.norm) for layer in [*cnn.convs, *cnn.fcs]] == [bnn.LpNorm2d] * 2 + [bnn.LpNorm1d]
    assert mlp.norm_params() == {"h1": "hidden.0.norm", "h2": "hidden.1.norm"}  # gamma and beta, logged as BN's
    cnn(torch.rand(4, 1, 28, 28)).sum().backward()
    assert all(p.grad is not None for p in cnn.parameters())
    assert not MLP.stackable(mlp.cfg) and MLP.stackable(MLP.Config(bn=bn))


@pytest.mark.parametrize("overrides, key", [
    (("model.norm=l1",), "model.norm"),  # bn=none: no BN slot to put it in
    (("model.norm=l2", "model.bn=before", "model.bn_impl=torch"), "model.norm"),
    (("model.norm=linf", "model.bn=before", "model.bn_ghost=10"), "model.norm"),
    (("model.norm=l3", "model.bn=before"), "model.norm"),
    (("model.norm=l1", "model.bn=before", "tracking.precise_bn_batches=5"), "model.norm"),
])
def test_impossible_combinations_are_one_line_errors(overrides: tuple[str, ...], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^invalid config: {key}=") as e:
        validated(*overrides)
    assert "\n" not in str(e.value)
