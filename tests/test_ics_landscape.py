"""The probes that replay a step (ics, landscape: Santurkar et al. 2018; train_acts): their numbers against cases
with a known answer, and every piece of the run's state they must leave as it was. Bit-identity of a whole probed
run: test_probes.py."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from conftest import validated
from torch import Tensor, nn

from bnrepro.config import ConfigError
from bnrepro.models import CNN, MLP
from bnrepro.models.base import Model
from bnrepro.probes import ProbeView
from bnrepro.probes.ics import ICS
from bnrepro.probes.landscape import Landscape
from bnrepro.probes.train_acts import TrainActivations
from bnrepro.training.optim import SGD

SMALL = {"input_shape": (1, 4, 4), "init_std": 0.5}  # 16 inputs: a step costs microseconds


def stepped(model: Model, x: Tensor, y: Tensor, optimizer: SGD) -> ProbeView:
    """A training step's forward and backward, as SingleTrainer takes it, and the view a probe gets of it."""
    inputs = model.prepare_inputs(x, evaluation=False)
    optimizer.zero_grad()
    F.cross_entropy(model(inputs), y).backward()
    return ProbeView(1, model, {n: p.grad for n, p in model.named_parameters()}, stacked=False,
                     batch=(inputs, y), loss=F.cross_entropy, optimizer=optimizer)


def batch(n: int, *shape: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, *shape, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def sgd_with_frozen_first_layer(model: MLP, lr: float) -> SGD:
    """SGD whose first param group (layer h1's weight, BN's gamma and beta) has rate 0: h1 does not move."""
    first = [p for n, p in model.named_parameters() if n.startswith("hidden.0.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("hidden.0.")]
    optimizer = SGD(first, lr=0.0, momentum=0.9)
    optimizer.param_groups.append({**optimizer.param_groups[0], "params": rest, "lr": lr})
    return optimizer


def test_ics_is_zero_exactly_where_the_earlier_layers_do_not_move() -> None:
    torch.manual_seed(0)
    model = MLP(bn="before", hidden=[12, 12], **SMALL)
    x, y = batch(16, 1, 4, 4)
    values = ICS().measure(stepped(model, x, y, sgd_with_frozen_first_layer(model, lr=0.5)))
    assert list(values) == ICS().columns(model) == [f"ics/{m}/{layer}" for m in ("l2", "cos")
                                                      for layer in ("h1", "h2", "out")]
    # h2's only earlier layer is frozen: G' is G, bit for bit (the same batch, the same BN statistics)
    assert (values["ics/l2/h1"], values["ics/cos/h1"], values["ics/l2/h2"]) == (0.0, 1.0, 0.0)
    assert values["ics/cos/h2"] == pytest.approx(1.0, abs=1e-6)
    assert values["ics/l2/out"] > 1e-3 and values["ics/cos/out"] < 1.0  # h2 moves, so the output layer's G' differs
    moving = ICS().measure(stepped(model, x, y, SGD(model.parameters(), lr=0.5)))
    assert moving["ics/l2/h2"] > 1e-3


def test_ics_moves_the_earlier_layers_by_the_update_the_optimizer_is_about_to_apply() -> None:
    """With momentum the update is not -lr * G: the probe's G' for the output layer is autograd's gradient after
    the hidden layer took the real step (the model stepped by the optimizer itself, the output layer put back)."""
    torch.manual_seed(0)
    model = MLP(hidden=[10], **SMALL)
    x, y = batch(16, 1, 4, 4)
    optimizer = SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=0.01, nesterov=True)
    stepped(model, x, y, optimizer)
    optimizer.step()  # a momentum buffer from a first step
    view = stepped(model, x, y, optimizer)
    buffers = [s["momentum_buffer"].clone() for s in optimizer.state.values()]
    values = ICS().measure(view)
    assert all(torch.equal(b, s["momentum_buffer"]) for b, s in zip(buffers, optimizer.state.values()))
    g, out_layer = model.out.weight.grad.clone(), [p.detach().clone() for p in model.out.parameters()]
    optimizer.step()
    with torch.no_grad():
        for p, kept in zip(model.out.parameters(), out_layer):
            p.copy_(kept)
    model.zero_grad()
    F.cross_entropy(model(x.flatten(1)), y).backward()
    g_moved = model.out.weight.grad
    assert values["ics/l2/out"] == pytest.approx(float(torch.linalg.vector_norm(g - g_moved)), rel=1e-5)
    assert values["ics/cos/out"] == pytest.approx(float(F.cosine_similarity(g.flatten(), g_moved.flatten(), 0)),
                                                  rel=1e-6)


@dataclass
class QuadraticConfig:
    dim: int = 3


class Quadratic(Model):
    """L(w) = 0.5 w^T A w whatever the batch: gradient A w, and along -g the gradient changes by eta A g."""

    Config = QuadraticConfig

    def __init__(self, a: Tensor, w: Tensor) -> None:
        super().__init__(dim=len(w))
        self.register_buffer("a", a)
        self.w = nn.Parameter(w.clone())
        self.tap_names = []

    def forward(self, x: Tensor, taps: list[Tensor] | None = None, unit: int | None = None) -> Tensor:
        return 0.5 * self.w @ self.a @ self.w

    def weight_params(self) -> dict[str, str]:
        return {"w": "w"}


def test_the_landscape_of_a_quadratic_is_known() -> None:
    a = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.5]], dtype=torch.float64)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    model, lr = Quadratic(a, w), 0.1
    model(None).backward()
    g = a @ w
    view = ProbeView(1, model, {"w": model.w.grad}, stacked=False, batch=(None, torch.zeros(())),
                     loss=lambda out, _: out, optimizer=SGD(model.parameters(), lr=lr))
    probe = Landscape(points=3)  # step sizes lr x 0.5, 2.25, 4
    values = probe.measure(view)
    etas = [lr * f for f in (0.5, 2.25, 4.0)]
    losses = [float(0.5 * (w - eta * g) @ a @ (w - eta * g)) for eta in etas]
    change = float(torch.linalg.vector_norm(a @ g))
    assert values == pytest.approx({
        "landscape/loss/min": min(losses), "landscape/loss/max": max(losses),
        "landscape/grad_change/min": etas[0] * change, "landscape/grad_change/max": etas[-1] * change,
        "landscape/beta": change / float(torch.linalg.vector_norm(g))}, rel=1e-12)
    assert torch.equal(model.w.detach(), w) and torch.equal(model.w.grad, g)


@pytest.mark.parametrize("probe", [ICS(), Landscape(points=2), TrainActivations()],
                         ids=["ics", "landscape", "train_acts"])
def test_the_probes_leave_a_conv_net_with_bn_and_dropout_as_they_found_it(probe) -> None:
    """Weights, BN's running statistics and batch counts, .grad, the momentum buffers and the global RNG (dropout
    and noisy BN's noise draw from it) all as before; the measurement itself finite."""
    torch.manual_seed(0)
    model = CNN(bn="before", channels=[2, 3], hidden=[6], dropout=0.3, input_shape=(1, 8, 8), init_std=0.3,
                bn_noise=True)
    x, y = batch(6, 1, 8, 8)
    optimizer = SGD(model.parameters(), lr=0.2, momentum=0.9)
    stepped(model, x, y, optimizer)
    optimizer.step()
    view = stepped(model, x, y, optimizer)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: g.clone() for n, g in view.grads.items()}
    buffers = [s["momentum_buffer"].clone() for s in optimizer.state.values()]
    rng = torch.get_rng_state()
    values = probe.measure(view)
    assert list(values) == probe.columns(model) and all(math.isfinite(v) for v in values.values())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(grads[n], p.grad) for n, p in model.named_parameters())
    assert all(torch.equal(b, s["momentum_buffer"]) for b, s in zip(buffers, optimizer.state.values()))
    assert torch.equal(rng, torch.get_rng_state())
    if isinstance(probe, ICS):
        assert (values["ics/l2/conv1"], values["ics/cos/conv1"]) == (0.0, 1.0) and values["ics/l2/conv2"] > 0


def test_train_acts_are_the_percentiles_of_the_steps_batch_in_training_mode() -> None:
    """With noisy BN: the tap values of the step's batch, BN by the batch's statistics and the noise drawn from the
    RNG state the probe found; and unit 1's percentiles, as the config asks."""
    torch.manual_seed(0)
    model = MLP(hidden=[5, 4], bn="before", bn_noise=True, **SMALL)
    x, y = batch(8, 1, 4, 4)
    view = stepped(model, x, y, SGD(model.parameters(), lr=0.1))
    values = TrainActivations(unit=1, percentiles=[10.0, 50.0, 90.0]).measure(view)
    taps: list[Tensor] = []
    model(view.batch[0], taps, 1)  # the same draws: the RNG where the probe found it
    q = torch.tensor([0.1, 0.5, 0.9])
    assert values == {f"train_act/{tap}/p{p}": v for tap, t in zip(("h1", "h2"), taps)
                      for p, v in zip((10, 50, 90), torch.quantile(t.detach(), q).tolist())}
    # the unit and percentiles are the run's tracked ones (tracking.unit, tracking.percentiles)
    cfg = validated("probes=[train_acts]", "tracking.unit=1", "tracking.percentiles=[10,50,90]").probes.train_acts
    assert (cfg.unit, list(cfg.percentiles)) == (1, [10, 50, 90])
    model.eval()  # what the evaluation's act/ columns see: running statistics, no noise
    inference: list[Tensor] = []
    model(view.batch[0], inference, 1)
    assert all(not torch.equal(a, b) for a, b in zip(taps, inference))


def test_next_values_are_the_next_step_bit_for_bit() -> None:
    torch.manual_seed(0)
    params = [torch.randn(7, 5, requires_grad=True), torch.randn(5, requires_grad=True)]
    optimizer = SGD(params, lr=0.3, momentum=0.9, weight_decay=0.01, nesterov=True)
    for _ in range(3):  # the first step creates the momentum buffers, the next ones use them
        for p in params:
            p.grad = torch.randn_like(p)
        before = optimizer.state_dict()
        expected = optimizer.next_values()
        assert repr(optimizer.state_dict()) == repr(before)
        optimizer.step()
        assert all(torch.equal(expected[p], p) for p in params)


@pytest.mark.parametrize("override", ["probes.landscape.high=0.4", "probes.landscape.points=1",
                                      "probes.landscape.low=0"])
def test_a_bad_landscape_setting_is_one_line_naming_it(override: str) -> None:
    with pytest.raises(ConfigError) as e:
        validated("probes=[landscape]", override)
    assert str(e.value).startswith(f"invalid config: {override.split('=')[0]}=") and "\n" not in str(e.value)
