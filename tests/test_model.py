"""The paper's MLP: layout, BN placement, tracked activation inputs, init."""

from __future__ import annotations

import pytest
import torch

from bnrepro import nn as bnn
from bnrepro.models import MLP


def test_shapes_and_tracked_inputs() -> None:
    model = MLP(hidden=[100, 50, 30], bn="before")
    acts: list[torch.Tensor] = []
    out = model(torch.rand(8, 784), acts)
    assert out.shape == (8, 10)
    assert [a.shape for a in acts] == [(8, 100), (8, 50), (8, 30)]
    assert model.layer_names == ["h1", "h2", "h3"]


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
    assert model.norms() == {}
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
