"""The conv net part: layout, taps, BN placement (ours against torch's), init, dropout, config checks, training;
and our BatchNorm2d on the channels-last feature maps the net runs on."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import validated
from omegaconf import OmegaConf
from torch import nn

from bnrepro import nn as bnn
from bnrepro.models.base import Model
from bnrepro.models.cnn import CNN, CNNConfig
from bnrepro.parts import ConfigError, load_part

CONF = Path(__file__).resolve().parent.parent / "conf" / "model" / "cnn.yaml"
SMALL = dict(channels=[4, 4, 6], hidden=[12, 10])  # 28 -> 28, pool -> 14 -> 14 (no pool after a lone third conv)


def images(n: int, shape: tuple[int, ...] = (1, 28, 28), seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bn", ["none", "before", "after"])
def test_logits_and_tap_shapes(bn: str) -> None:
    model = CNN(bn=bn)  # the defaults: channels [8, 8, 16, 16], a pool after every second conv, hidden [128]
    taps: list[torch.Tensor] = []
    out = model(images(5), taps)
    assert out.shape == (5, 10)
    assert model.tap_names == ["conv1", "conv2", "conv3", "conv4", "fc1"]
    assert [tuple(t.shape) for t in taps] == [(5, 8, 28, 28), (5, 8, 28, 28), (5, 16, 14, 14), (5, 16, 14, 14),
                                             (5, 128)]
    assert model.cfg.tap_widths() == [8, 8, 16, 16, 128]


def test_layer_names_point_at_parameters() -> None:
    model = CNN(bn="before", **SMALL)
    params = dict(model.named_parameters())
    assert list(model.weight_params()) == ["conv1", "conv2", "conv3", "fc1", "fc2", "out"]
    assert all(params[name].dim() == 4 for name in list(model.weight_params().values())[:3])
    assert all(params[name].dim() == 2 for name in list(model.weight_params().values())[3:])
    assert list(model.norm_params()) == model.tap_names
    for prefix in model.norm_params().values():
        assert f"{prefix}.weight" in params and f"{prefix}.bias" in params
    assert CNN(bn="none", **SMALL).norm_params() == {}


@pytest.mark.parametrize("unit", [0, 3])
def test_unit_is_that_channel_over_batch_and_positions(unit: int) -> None:
    model = CNN(bn="before", **SMALL).eval()  # eval: both passes see the same (running) statistics
    x = images(3)
    full: list[torch.Tensor] = []
    one: list[torch.Tensor] = []
    torch.testing.assert_close(model(x, full), model(x, one, unit=unit), rtol=0, atol=0)
    assert [tuple(t.shape) for t in one] == [(3 * 28 * 28,), (3 * 28 * 28,), (3 * 14 * 14,), (3,), (3,)]
    for whole, single in zip(full, one, strict=True):
        assert torch.equal(single, whole[:, unit].reshape(-1))  # batch-major, then H, then W
        assert single.untyped_storage().data_ptr() != whole.untyped_storage().data_ptr()  # a copy


def test_bn_before_drops_biases_and_its_output_is_the_tap() -> None:
    model = CNN(bn="before", bn_eps=1e-8, **SMALL)  # a tiny eps, so that the BN output's variance is 1
    assert all(layer.op.bias is None for layer in [*model.convs, *model.fcs])
    assert all(isinstance(layer.norm, bnn.BatchNorm2d) for layer in model.convs)
    assert all(isinstance(layer.norm, bnn.BatchNorm1d) for layer in model.fcs)
    assert all(layer.op.bias is not None for layer in [*CNN(bn="after", **SMALL).convs, *CNN(**SMALL).fcs])
    x = images(6)
    taps: list[torch.Tensor] = []
    model(x, taps)
    conv1, norm1 = model.convs[0].op, model.convs[0].norm
    expected = F.batch_norm(F.conv2d(x, conv1.weight, None, padding=1), None, None, norm1.weight, norm1.bias,
                            training=True, eps=norm1.eps)
    torch.testing.assert_close(taps[0], expected, atol=1e-5, rtol=1e-5)
    for tap in taps:  # every tap is a training-mode BN output with gamma 1, beta 0: per channel mean 0, variance 1
        per_channel = tap.transpose(0, 1).reshape(tap.shape[1], -1)
        torch.testing.assert_close(per_channel.mean(1), torch.zeros(tap.shape[1]), atol=1e-4, rtol=0)
        torch.testing.assert_close(per_channel.var(1, unbiased=False), torch.ones(tap.shape[1]), atol=1e-3, rtol=0)


def test_bn_after_follows_the_activation() -> None:
    model = CNN(bn="after", activation="tanh", **SMALL)
    x = images(4)
    taps: list[torch.Tensor] = []
    model(x, taps)
    conv1, norm1, conv2 = model.convs[0].op, model.convs[0].norm, model.convs[1].op
    torch.testing.assert_close(taps[0], F.conv2d(x, conv1.weight, conv1.bias, padding=1))  # the tap is before BN
    after = F.batch_norm(torch.tanh(taps[0]), None, None, norm1.weight, norm1.bias, training=True, eps=norm1.eps)
    torch.testing.assert_close(taps[1], F.conv2d(after, conv2.weight, conv2.bias, padding=1), atol=1e-5, rtol=1e-5)


def with_bn_params(model: CNN) -> CNN:
    """gamma and beta away from their 1/0 init, which hides mistakes."""
    with torch.no_grad():
        for prefix in model.norm_params().values():
            model.get_parameter(f"{prefix}.weight").uniform_(0.5, 1.5)
            model.get_parameter(f"{prefix}.bias").normal_(0, 0.2)
    return model


def train_twice_then_eval(models: list[CNN]) -> list[list[torch.Tensor]]:
    """Per model: the logits and every gradient of two training steps' forward and backward, the buffers after
    them, and the eval-mode logits: all in float64."""
    y = torch.arange(8) % 10
    results: list[list[torch.Tensor]] = [[] for _ in models]
    for step in range(2):
        x = images(8, seed=step) * 3 - 1
        for model, out in zip(models, results, strict=True):
            model.train().zero_grad(set_to_none=True)
            logits = model(x.to(model.out.weight.dtype))
            F.cross_entropy(logits, y).backward()
            out += [logits.detach(), *(p.grad for p in model.parameters())]
    for model, out in zip(models, results, strict=True):
        out += [*model.buffers(), model.eval()(images(8, seed=5).to(model.out.weight.dtype)).detach()]
    return [[t.double() for t in out] for out in results]


@pytest.mark.parametrize("bn,momentum", [("before", 0.1), ("after", None)])
def test_our_bn_layers_match_torchs(bn: str, momentum: float | None) -> None:
    """The net with our BN layers and with torch's, from the same weights, in float64: the same logits, gradients
    and running statistics (training), and the same logits with the running statistics (eval)."""
    torch.manual_seed(0)
    ours = with_bn_params(CNN(bn=bn, bn_momentum=momentum, **SMALL).double())
    ref = CNN(bn=bn, bn_impl="torch", bn_momentum=momentum, **SMALL).double()
    ref.load_state_dict(ours.state_dict())
    assert isinstance(ref.convs[0].norm, nn.BatchNorm2d) and not isinstance(ref.convs[0].norm, bnn.BatchNorm2d)
    got, want = train_twice_then_eval([ours, ref])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("bn", ["before", "after"])
def test_float32_close_to_float64(bn: str) -> None:
    """Our BN in float32 against the same net in float64 (torch's float32 BN is not the yardstick here: with BN
    after the ReLU, its gradients are off by up to ~1e-4 of their size, ours by ~1e-6)."""
    torch.manual_seed(0)
    single = with_bn_params(CNN(bn=bn, **SMALL))
    double = copy.deepcopy(single).double()
    got, want = train_twice_then_eval([single, double])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_gaussian_init_and_torch_init() -> None:
    model = CNN(init_std=0.05, channels=[16, 16], hidden=[64])
    ops = [*(layer.op for layer in [*model.convs, *model.fcs]), model.out]
    weights = torch.cat([op.weight.detach().reshape(-1) for op in ops])
    assert abs(weights.std().item() - 0.05) < 0.002 and abs(weights.mean().item()) < 0.002
    assert all(torch.count_nonzero(op.bias) == 0 for op in ops)
    for op in ops[1:]:  # each layer on its own too (the first conv has too few weights to judge)
        assert abs(op.weight.std().item() - 0.05) < 0.01
    default = CNN(init="torch", channels=[16, 16], hidden=[64])  # kaiming-uniform: std 1/sqrt(3 fan_in)
    fc1 = default.fcs[0].op  # fan_in 16 * 14 * 14: std 0.0103, far from 0.05
    assert abs(fc1.weight.std().item() - 1 / (3 * 16 * 14 * 14) ** 0.5) < 0.0005
    assert torch.count_nonzero(fc1.bias) > 0


def test_dropout_only_in_training() -> None:
    x = images(16)
    model = CNN(dropout=0.5, **SMALL)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))
    without = CNN(dropout=0.0, **SMALL).train()
    assert torch.equal(without(x), without(x))  # so the difference above is dropout's


@pytest.mark.parametrize("key,value", [
    ("channels", []), ("channels", [8, 0]), ("pool_every", 0), ("hidden", [16, -1]), ("activation", "gelu"),
    ("bn", "between"), ("bn_impl", "cudnn"), ("init", "xavier"), ("init_std", 0.0), ("bn_eps", -1e-5),
    ("bn_momentum", 1.5), ("dropout", 1.0), ("dropout", -0.1),
])
def test_config_check_names_the_key(key: str, value: object) -> None:
    CNNConfig().check()
    with pytest.raises(ConfigError) as e:
        dataclasses.replace(CNNConfig(), **{key: value}).check()
    assert e.value.key == key


def test_too_many_pools_for_the_input() -> None:
    CNN(channels=[4] * 4, pool_every=1, input_shape=(1, 28, 28))  # 28 -> 14 -> 7 -> 3 -> 1
    with pytest.raises(ConfigError) as e:
        CNN(channels=[4] * 5, pool_every=1, input_shape=(1, 28, 28))
    assert e.value.key == "model.pool_every"


@pytest.mark.parametrize("overrides, key, value", [
    (("data=linear_gaussian",), "data", "linear Gaussian"),
    (("model.channels=[4,4,4,4,4]", "model.pool_every=1"), "model.pool_every", 1),
])
def test_samples_the_net_cannot_take_are_refused_before_anything_loads(overrides: tuple[str, ...], key: str,
                                                                       value: object) -> None:
    with pytest.raises(ConfigError) as e:
        validated("model=cnn", *overrides)
    assert (e.value.key, e.value.value) == (key, value) and "\n" not in str(e.value)


def test_yaml_lists_every_key_with_its_default() -> None:
    node = OmegaConf.load(CONF)
    cls, _ = load_part(node, "model", Model)
    assert cls is CNN
    body = {k: v for k, v in OmegaConf.to_container(node).items() if k != "_target_"}
    assert body == dataclasses.asdict(CNNConfig())


def test_training_lowers_the_loss() -> None:
    """100 SGD steps on a small separable problem: classes by which of three image regions is brightest."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(96, 1, 12, 12, generator=g)
    y = torch.randint(0, 3, (96,), generator=g)
    for k in range(3):  # class k: rows 4k..4k+3 brighter
        x[y == k, :, 4 * k:4 * k + 4] += 1.0
    model = CNN(channels=[4, 4], hidden=[16], bn="before", input_shape=(1, 12, 12), num_classes=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(100):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() > 0.9


# Our BatchNorm2d on channels-last input, the layout the net's feature maps have (batchnorm_cpu.h's third kernel)

@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (2, 16, 7, 7)])
@pytest.mark.parametrize("affine,momentum", [(True, 0.1), (False, None)])
def test_bn2d_channels_last_matches_torch(shape: tuple[int, ...], affine: bool, momentum: float | None) -> None:
    torch.manual_seed(0)
    ours = bnn.BatchNorm2d(shape[1], affine=affine, momentum=momentum, dtype=torch.float64)
    if affine:
        with torch.no_grad():
            ours.weight.uniform_(0.5, 2.0)
            ours.bias.normal_()
    ref = nn.BatchNorm2d(shape[1], affine=affine, momentum=momentum, dtype=torch.float64)
    ref.load_state_dict(ours.state_dict())
    loc = torch.randn(1, shape[1], 1, 1, dtype=torch.float64) * 5
    for training in (True, True, False):
        ours.train(training), ref.train(training)
        x = (torch.randn(shape, dtype=torch.float64) * 3 + loc).contiguous(memory_format=torch.channels_last)
        dy = torch.randn(shape, dtype=torch.float64)  # contiguous: backward converts it
        results = []
        for layer in (ours, ref):
            xi = x.clone().requires_grad_()
            y = layer(xi)
            results.append((y, *torch.autograd.grad(y, [xi, *layer.parameters()], dy)))
        assert results[0][0].is_contiguous(memory_format=torch.channels_last)
        assert results[0][1].is_contiguous(memory_format=torch.channels_last)
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(ours.running_var, ref.running_var, atol=1e-12, rtol=1e-10)


def test_bn2d_channels_last_same_bits_on_any_thread_count() -> None:
    shape = (8, 16, 6, 6)
    x = (torch.randn(shape) * 2 + 1).contiguous(memory_format=torch.channels_last)
    outs = []
    before = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            bn = bnn.BatchNorm2d(16)
            xi = x.clone().requires_grad_()
            y = bn(xi)
            y.backward(torch.linspace(-1, 1, x.numel()).view(shape))
            outs.append((y.detach(), xi.grad, bn.weight.grad, bn.bias.grad, bn.running_var))
        finally:
            torch.set_num_threads(before)
    for a, b in zip(*outs, strict=True):
        assert torch.equal(a, b)
