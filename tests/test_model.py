"""The paper's MLP: layout, BN placement, tracked activation inputs, init; the sparse input it evaluates on."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bnrepro import nn as bnn
from bnrepro.models import MLP, SparseRows


def binary_images(n: int, features: int = 784, density: float = 0.13, seed: int = 0) -> torch.Tensor:
    """(n, features) of 0/1 like the paper's MNIST input, a few rows all zero."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, features, generator=g) < density).float()
    x[::17] = 0
    return x


def grayscale_images(n: int, features: int = 784, seed: int = 0) -> torch.Tensor:
    """(n, features) in [0, 1], about 80% zeros, as MNIST's pixel/255."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, features, generator=g) * binary_images(n, features, density=0.2, seed=seed + 1)


def test_shapes_and_tracked_inputs() -> None:
    model = MLP(hidden=[100, 50, 30], bn="before")
    acts: list[torch.Tensor] = []
    out = model(torch.rand(8, 784), acts)
    assert out.shape == (8, 10)
    assert [a.shape for a in acts] == [(8, 100), (8, 50), (8, 30)]
    assert model.tap_names == ["h1", "h2", "h3"]


def test_bn_before_drops_the_bias_and_feeds_the_activation() -> None:
    model = MLP(bn="before").eval()
    assert all(h.linear.bias is None for h in model.hidden)
    assert all(isinstance(h.norm, bnn.BatchNorm1d) for h in model.hidden)
    x = torch.rand(5, 784)
    acts: list[torch.Tensor] = []
    model(x, acts)
    # the tracked input of layer 1 is the BN output of its linear map
    expected = model.hidden[0].norm(model.hidden[0].linear(x))
    torch.testing.assert_close(acts[0], expected)


def test_tracking_one_unit_gives_that_column_exactly() -> None:
    model = MLP(bn="before").eval()
    x = torch.rand(7, 784)
    every, one = [], []
    model(x, every)
    model(x, one, unit=3)
    assert [a.shape for a in one] == [(7,)] * 3
    assert all(torch.equal(a[:, 3], b) for a, b in zip(every, one, strict=True))


def test_bn_after_normalizes_the_activation_output() -> None:
    model = MLP(bn="after", activation="relu").eval()
    assert all(h.linear.bias is not None for h in model.hidden)
    x = torch.rand(5, 784)
    acts: list[torch.Tensor] = []
    model(x, acts)
    h1 = model.hidden[0]
    torch.testing.assert_close(acts[0], h1.linear(x))
    torch.testing.assert_close(acts[1], model.hidden[1].linear(h1.norm(torch.relu(h1.linear(x)))))


def test_no_bn_has_no_norm_layers() -> None:
    model = MLP(bn="none")
    assert model.norm_params() == {}
    assert not any("running_mean" in k for k in model.state_dict())


def test_gaussian_init_has_the_configured_std_and_zero_bias() -> None:
    torch.manual_seed(0)
    model = MLP(init="gaussian", init_std=0.05)
    w = model.hidden[0].linear.weight
    assert abs(w.std().item() - 0.05) < 0.002 and abs(w.mean().item()) < 0.002
    assert torch.count_nonzero(model.out.bias) == 0


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_our_bn_and_torchs_give_the_same_network(activation: str) -> None:
    torch.manual_seed(0)
    ours = MLP(bn="before", bn_impl="bnrepro", activation=activation).double()
    ref = MLP(bn="before", bn_impl="torch", activation=activation).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.rand(60, 784, dtype=torch.float64)
    y = torch.randint(0, 10, (60,))
    for model in (ours, ref):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    torch.testing.assert_close(ours.eval()(x), ref.eval()(x))


def _reference_forward(model: MLP, x: torch.Tensor, act_inputs: list[torch.Tensor]) -> torch.Tensor:
    """MLP.forward as it was, through the Linear modules' own calls: the training step's bits must not move."""
    for layer in model.hidden:
        z = layer.linear(x)
        if model.bn_before:
            z = layer.norm(z)
        act_inputs.append(z)
        x = model.act(z)
        if layer.norm is not None and not model.bn_before:
            x = layer.norm(x)
    return model.out(x)


@pytest.mark.parametrize("bn", ["none", "before", "after"])
def test_training_forward_and_backward_are_bit_identical_to_the_module_calls(bn: str) -> None:
    torch.manual_seed(0)
    model = MLP(bn=bn)
    x, y = torch.rand(60, 784), torch.randint(0, 10, (60,))
    ours, ref = [], []
    F.cross_entropy(model(x, ours), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    F.cross_entropy(_reference_forward(model, x, ref), y).backward()
    assert all(torch.equal(a, b) for a, b in zip(ours, ref, strict=True))
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))


@pytest.mark.parametrize("make", [binary_images, grayscale_images])
@pytest.mark.parametrize("out, features, with_bias", [(100, 784, True), (100, 784, False), (300, 784, True),
                                                      (7, 33, True)])
def test_sparse_rows_linear_equals_dense_linear(make, out: int, features: int, with_bias: bool) -> None:
    # out=300: three stacked models' first layers, (K * 100, 784), in one call
    x = make(500, features)
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(out, features, generator=g) * 0.05
    bias = torch.randn(out, generator=g) if with_bias else None
    rows = SparseRows.from_dense(x)
    assert rows.shape == (500, features)
    assert (rows.values is None) == (make is binary_images)
    torch.testing.assert_close(rows.linear(weight, bias), F.linear(x, weight, bias), rtol=0, atol=1e-5)


@pytest.mark.parametrize("make", [binary_images, grayscale_images])
def test_stacked_weights_give_each_models_own_columns_bit_for_bit(make) -> None:
    # K models' first layers in one call: model k's columns must be exactly what it gets alone
    x = make(700)
    g = torch.Generator().manual_seed(1)
    weights, biases = torch.randn(5, 100, 784, generator=g), torch.randn(5, 100, generator=g)
    rows = SparseRows.from_dense(x)
    stacked = rows.linear(weights.reshape(500, 784), biases.reshape(500)).view(700, 5, 100)
    assert all(torch.equal(stacked[:, k], rows.linear(weights[k], biases[k])) for k in range(5))


def test_sparse_rows_keep_float64_and_gradients() -> None:
    x = grayscale_images(50).double()
    weight = torch.randn(20, 784, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(20, dtype=torch.float64, requires_grad=True)
    out = SparseRows.from_dense(x).linear(weight, bias)
    ref = F.linear(x, weight, bias)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref)
    dy = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, (weight, bias), dy),
                               torch.autograd.grad(ref, (weight, bias), dy))


def test_sparse_rows_refuse_a_weight_of_another_fan_in() -> None:
    with pytest.raises(ValueError, match="784"):
        SparseRows.from_dense(binary_images(5)).linear(torch.zeros(10, 783))


@pytest.mark.parametrize("bn", ["none", "before", "after"])
@pytest.mark.parametrize("make", [binary_images, grayscale_images])
def test_mlp_on_sparse_rows_equals_the_dense_forward(bn: str, make) -> None:
    torch.manual_seed(0)
    model = MLP(bn=bn).eval()
    for norm in (h.norm for h in model.hidden if h.norm is not None):  # running statistics away from their (0, 1) start
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    x = make(400)
    dense, sparse = [], []
    with torch.no_grad():
        logits = model(x, dense, unit=2)
        torch.testing.assert_close(model(SparseRows.from_dense(x), sparse, unit=2), logits, rtol=0, atol=1e-5)
    for a, b in zip(dense, sparse, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
