"""Ghost BN (bnrepro.nn.GhostBatchNorm1d/2d) against BN applied to each sub-batch by hand: ours bit for bit, and
torch.nn's as the oracle; and model.bn_ghost, which gives the networks those layers."""

import pytest
import torch
from hydra import compose, initialize_config_module
from torch import nn

from bnrepro.config import register_configs, validate
from bnrepro.models import CNN, MLP
from bnrepro.nn import BatchNorm1d, BatchNorm2d, GhostBatchNorm1d, GhostBatchNorm2d, cpu_kernel
from bnrepro.parts import ConfigError

# (ghost layer, our plain layer, torch's, input shape, ghost batch size)
CASES = [
    (GhostBatchNorm1d, BatchNorm1d, nn.BatchNorm1d, (24, 7), 6),
    (GhostBatchNorm1d, BatchNorm1d, nn.BatchNorm1d, (12, 4, 5), 4),
    (GhostBatchNorm2d, BatchNorm2d, nn.BatchNorm2d, (8, 3, 5, 6), 2),
]


@pytest.fixture(autouse=True, params=["cpu_kernel", "torch_ops"])
def bn_path(request, monkeypatch):
    """Both implementations of the parent layer: the fused C++ kernel (CPU) and the torch ops (CUDA's path)."""
    monkeypatch.setattr(cpu_kernel, "enabled", request.param == "cpu_kernel")


def _layers(ghost_cls, plain_cls, torch_cls, c: int, g: int, momentum: float | None = 0.1):
    torch.manual_seed(0)
    ghost = ghost_cls(c, g, dtype=torch.float64, momentum=momentum)
    with torch.no_grad():
        ghost.weight.uniform_(0.5, 2.0)
        ghost.bias.normal_()
        ghost.running_mean.normal_()  # not the 0/1 init, which hides a wrong update
        ghost.running_var.uniform_(0.5, 2.0)
    plain, ref = plain_cls(c, dtype=torch.float64, momentum=momentum), torch_cls(c, dtype=torch.float64,
                                                                                   momentum=momentum)
    plain.load_state_dict(ghost.state_dict())
    ref.load_state_dict(ghost.state_dict())
    return ghost, plain, ref


def _by_hand(layer: nn.Module, x: torch.Tensor, g: int) -> torch.Tensor:
    """The layer applied to each sub-batch of g samples in turn, the outputs joined in order."""
    return torch.cat([layer(chunk) for chunk in x.split(g)])


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("ghost_cls, plain_cls, torch_cls, shape, g", CASES)
def test_ghost_bn_is_bn_on_each_sub_batch(ghost_cls, plain_cls, torch_cls, shape, g, momentum) -> None:
    ghost, plain, ref = _layers(ghost_cls, plain_cls, torch_cls, shape[1], g, momentum)
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1
    if len(shape) == 4:
        x = x.contiguous(memory_format=torch.channels_last)  # as the conv net keeps its feature maps
    dy = torch.randn(shape, dtype=torch.float64)
    outs = {}
    for name, layer, forward in (("ghost", ghost, ghost), ("plain", plain, lambda t: _by_hand(plain, t, g)),
                                 ("torch", ref, lambda t: _by_hand(ref, t, g))):
        xi = x.clone().requires_grad_()
        for _ in range(2):  # two steps: the running statistics move twice per sub-batch count
            y = forward(xi)
        y.backward(dy)
        outs[name] = (y.detach(), xi.grad, layer.weight.grad, layer.bias.grad, layer.running_mean,
                      layer.running_var, layer.num_batches_tracked)
    assert outs["ghost"][-1] == 2 * shape[0] // g  # one update per sub-batch
    for a, b in zip(outs["ghost"], outs["plain"], strict=True):
        assert torch.equal(a, b)  # the parent layer on each sub-batch, bit for bit
    for a, b in zip(outs["ghost"], outs["torch"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)
    # the statistics really are per sub-batch: the whole batch's differ
    assert not torch.allclose(outs["ghost"][0], plain.train()(x))


@pytest.mark.parametrize("ghost_cls, plain_cls, torch_cls, shape, g", CASES)
def test_the_kernel_normalises_all_sub_batches_in_one_node(ghost_cls, plain_cls, torch_cls, shape, g) -> None:
    ghost, _, _ = _layers(ghost_cls, plain_cls, torch_cls, shape[1], g)
    y = ghost(torch.randn(shape, dtype=torch.float64, requires_grad=True))
    # one call and one autograd node where the C++ kernel runs; the parent's layer on each sub-batch elsewhere
    expected = "torch::autograd::CppNode<bnrepro::BatchNormFunction>" if cpu_kernel.enabled else "CatBackward0"
    assert y.grad_fn.name() == expected


@pytest.mark.parametrize("ghost_cls, plain_cls, torch_cls, shape, g", CASES)
def test_inference_and_small_batches_are_plain_bn(ghost_cls, plain_cls, torch_cls, shape, g) -> None:
    ghost, plain, _ = _layers(ghost_cls, plain_cls, torch_cls, shape[1], g)
    x = torch.randn(shape, dtype=torch.float64)
    assert torch.equal(ghost.eval()(x), plain.eval()(x))  # running statistics, whatever the batch
    small = x[:g]
    assert torch.equal(ghost.train()(small), plain.train()(small))  # one ghost batch: BN itself


def test_a_ghost_size_that_does_not_divide_the_batch_or_is_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="ghost_batch_size 4 does not divide the batch of 10 samples"):
        GhostBatchNorm1d(3, 4)(torch.randn(10, 3))
    with pytest.raises(ValueError, match="ghost_batch_size must be at least 2, got 1"):
        GhostBatchNorm2d(3, 1)
    assert "ghost_batch_size=4" in repr(GhostBatchNorm1d(3, 4))


# --- model.bn_ghost: the networks' BN layers in their ghost-batch form -------------------------------------------

def _validated(*overrides: str):
    register_configs()
    with initialize_config_module(config_module="bnrepro.conf", version_base="1.3"):
        return validate(compose("config", overrides=list(overrides)))


@pytest.mark.parametrize("model, layers", [("mlp", {GhostBatchNorm1d}), ("cnn", {GhostBatchNorm1d, GhostBatchNorm2d})])
def test_bn_ghost_gives_the_networks_ghost_layers_that_train(model: str, layers: set) -> None:
    cfg = _validated(f"model={model}", "model.bn=before", "model.bn_ghost=15")
    settings = {k: v for k, v in cfg.model.items() if k != "_target_"}
    net = (MLP if model == "mlp" else CNN)(**settings)
    norms = [m for m in net.modules() if isinstance(m, BatchNorm1d | BatchNorm2d)]
    assert norms and {type(m) for m in norms} == layers and all(m.ghost_batch_size == 15 for m in norms)
    if model == "mlp":  # a ghost batch has no stacked form: such runs train alone in a vectorized sweep
        assert not MLP.stackable(net.cfg) and MLP.stackable(MLP(bn="before").cfg)
    x = torch.rand(60, 1, 28, 28)
    net.train()
    net(net.prepare_inputs(x, evaluation=False)).sum().backward()
    assert all(int(m.num_batches_tracked) == 4 for m in norms)  # 60 / 15 ghost batches, one update each


@pytest.mark.parametrize("overrides, allowed", [
    (("model.bn=before", "model.bn_ghost=7"), "a divisor of train.batch_size (60)"),
    (("model.bn=before", "model.bn_ghost=1"), "a sub-batch size >= 2"),
    (("model.bn=none", "model.bn_ghost=10"), "with bn before or after"),
    (("model.bn=before", "model.bn_impl=torch", "model.bn_ghost=10"), "bn_impl=bnrepro"),
])
def test_bad_ghost_sizes_are_refused_naming_the_key(overrides: tuple[str, ...], allowed: str) -> None:
    with pytest.raises(ConfigError, match="model.bn_ghost") as e:
        _validated(*overrides)
    assert allowed in str(e.value)
