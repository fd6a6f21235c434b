"""Noisy BN's noise (Santurkar et al. 2018, Algorithm 1; bnrepro/nn/noise.py): its statistics are the stated
distributions, it is off in inference, the same seed gives the same draws, and the networks put it where the paper
does. (Resuming a run with it is bit-identical: tests/test_recipe.py's resume test runs with model.bn_noise.)"""

from __future__ import annotations

import pytest
import torch
from conftest import validated

from bnrepro import nn as bnn
from bnrepro.models import MLP
from bnrepro.models.cnn import CNN
from bnrepro.parts import ConfigError

N_MU, N_SIGMA, R_MU, R_SIGMA = 0.5, 1.25, 0.1, 0.1  # the paper's constants, the layer's defaults


def _draws(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, s) of one training step over `shape`: the noise on zeros is m, on ones s + m, from the same RNG state."""
    noise = bnn.BatchNoise()
    torch.manual_seed(seed)
    m = noise(torch.zeros(shape))
    torch.manual_seed(seed)
    return m, noise(torch.ones(shape)) - m


def test_per_unit_and_per_sample_draws_follow_the_stated_distributions() -> None:
    m, s = _draws((2000, 400), 0)  # 2000 samples of 400 units
    # per sample: m ~ U(mu_j - r_mu, mu_j + r_mu), so each unit's values span 2 r_mu around their unit's mu_j
    spread = m.amax(0) - m.amin(0)
    assert spread.le(2 * R_MU + 1e-6).all() and spread.gt(0.99 * 2 * R_MU).all()
    mu = (m.amax(0) + m.amin(0)) / 2  # mu_j, to within 1% of r_mu
    # per unit and step: mu_j ~ U(-n_mu, n_mu): inside the range, filling it, with a uniform's spread
    assert mu.abs().max() <= N_MU + 0.002 and mu.min() < -0.9 * N_MU and mu.max() > 0.9 * N_MU
    assert abs(mu.std().item() - 2 * N_MU / 12 ** 0.5) < 0.03
    # s ~ N(sigma_j, r_sigma) per sample, sigma_j ~ U(1, n_sigma) per unit
    sigma, within = s.mean(0), s.std(0)
    assert sigma.min() > 1 - 0.02 and sigma.max() < N_SIGMA + 0.02
    assert sigma.min() < 1 + 0.1 * (N_SIGMA - 1) and sigma.max() > N_SIGMA - 0.1 * (N_SIGMA - 1)
    assert abs(within.mean().item() - R_SIGMA) < 0.002 and within.min() > 0.9 * R_SIGMA
    # a unit's draws do not depend on another's: m and s uncorrelated across units
    assert torch.corrcoef(s[:, :50].T).fill_diagonal_(0).abs().max() < 0.15


def test_a_conv_layer_draws_per_channel_and_per_sample_and_position() -> None:
    m, s = _draws((50, 3, 6, 6), 1)
    flat = m.transpose(0, 1).reshape(3, -1)  # each channel's 50 x 36 values
    assert ((flat.amax(1) - flat.amin(1)) <= 2 * R_MU + 1e-6).all()  # one mu per channel
    # every sample and position its own draw (a float32 value may repeat by chance)
    assert len(torch.unique(m)) > 0.99 * m.numel() and len(torch.unique(s)) > 0.99 * s.numel()
    assert abs(s.transpose(0, 1).reshape(3, -1).std(1).mean().item() - R_SIGMA) < 0.01


def test_each_step_draws_anew_and_the_same_seed_draws_the_same() -> None:
    noise, x = bnn.BatchNoise(), torch.randn(60, 20)
    torch.manual_seed(3)
    first, second = noise(x), noise(x)
    assert not torch.allclose(first.mean(0), second.mean(0), atol=0.05)  # new mu_t per unit at the next step
    torch.manual_seed(3)
    assert torch.equal(noise(x), first) and torch.equal(noise(x), second)


def test_in_inference_it_is_the_identity_and_draws_nothing() -> None:
    noise, x = bnn.BatchNoise().eval(), torch.randn(8, 5)
    state = torch.get_rng_state()
    assert noise(x) is x
    assert torch.equal(torch.get_rng_state(), state)


def test_gradients_flow_through_the_scaled_input() -> None:
    noise, x = bnn.BatchNoise(), torch.randn(8, 5, requires_grad=True)
    torch.manual_seed(4)
    m, s = _draws((8, 5), 4)
    torch.manual_seed(4)
    noise(x).sum().backward()
    torch.testing.assert_close(x.grad, s)  # d(s * x + m)/dx = s, the noise a constant of the step


@pytest.mark.parametrize("bn", ["none", "before", "after"])
def test_the_mlp_puts_the_noise_after_bn_or_where_bn_would_sit(bn: str) -> None:
    torch.manual_seed(0)
    noisy = MLP(bn=bn, bn_noise=True, hidden=[6, 6], input_shape=(1, 4, 4))
    plain = MLP(bn=bn, hidden=[6, 6], input_shape=(1, 4, 4))
    plain.load_state_dict(noisy.state_dict())  # the same weights and BN buffers; the noise has no state
    x = torch.rand(10, 16)
    noisy.eval(), plain.eval()
    assert torch.equal(noisy(x), plain(x))  # off in inference
    noisy.train(), plain.train()
    torch.manual_seed(1)
    taps: list[torch.Tensor] = []
    noisy(x, taps)
    plain_taps: list[torch.Tensor] = []
    plain(x, plain_taps)
    first = plain_taps[0]
    torch.manual_seed(1)  # the noise's first layer draws, on the plain network's first activation input
    if bn == "after":  # after the activation's BN: the activation's input is the plain one, the noise comes later
        assert torch.equal(taps[0], first)
    else:  # without BN, in BN's slot before the activation
        assert torch.equal(taps[0], bnn.BatchNoise()(first))
    assert not MLP.stackable(noisy.cfg)


def test_the_cnn_is_noisy_in_training_only() -> None:
    torch.manual_seed(0)
    cnn, x = CNN(bn_noise=True, channels=[4, 4], hidden=[8]), torch.rand(3, 1, 28, 28)
    assert cnn.convs[0].op.bias is not None  # no BN: the conv keeps its bias, the noise sits before the ReLU
    assert not torch.equal(cnn(x), cnn(x))
    cnn.eval()
    assert torch.equal(cnn(x), cnn(x))


@pytest.mark.parametrize("override", ["model.bn_noise_sigma=0.9", "model.bn_noise_mu=-1",
                                      "model.bn_noise_r_sigma=-0.1"])
def test_bad_constants_are_one_line_errors(override: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^invalid config: {key}="):
        validated("model.bn_noise=true", override)
