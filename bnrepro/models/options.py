"""The settings every network of bnrepro shares: activation, where BN goes and whose BN it is, and the init."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from bnrepro import nn as bnn
from bnrepro.parts import check, check_choice

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "tanh": torch.tanh,
}
# the same, in place: at inference nothing keeps an activation's input, and a fresh (1000, C, H, W) output costs
# more in page faults than the activation's arithmetic
ACTIVATIONS_IN_PLACE: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid_,
    "relu": torch.relu_,
    "tanh": torch.tanh_,
}
BN_MODES = ("none", "before", "after")
BN_IMPLS = ("bnrepro", "torch")
INITS = ("gaussian", "torch")
NORMS = ("bn", "brn", *bnn.LP_ORDERS)  # bn, brn, l1, l2, linf
GHOST_LAYERS = {bnn.BatchNorm1d: bnn.GhostBatchNorm1d, bnn.BatchNorm2d: bnn.GhostBatchNorm2d}
RENORM_LAYERS = {bnn.BatchNorm1d: bnn.BatchRenorm1d, bnn.BatchNorm2d: bnn.BatchRenorm2d}
LP_LAYERS = {bnn.BatchNorm1d: bnn.LpNorm1d, bnn.BatchNorm2d: bnn.LpNorm2d}


@dataclass
class NetworkOptions:
    """The shared fields of a network's Config; each network's Config subclasses it (and may change defaults, and
    narrow the activations and BN placements it offers)."""

    activations: ClassVar[tuple[str, ...]] = tuple(ACTIVATIONS)
    bn_modes: ClassVar[tuple[str, ...]] = BN_MODES
    activation: str = "sigmoid"
    bn: str = "none"  # none | before (the paper: Linear/conv -> BN -> act) | after (Linear/conv -> act -> BN)
    bn_impl: str = "bnrepro"  # ours, or torch's layers as the reference
    init: str = "gaussian"  # N(0, init_std) weights, zero biases; or torch's default init
    init_std: float = 0.05
    bn_eps: float = 1e-5
    bn_momentum: float | None = 0.1  # torch convention; None = cumulative average
    # ghost batch size (Hoffer et al. 2017): in training, BN's statistics per sub-batch of this many samples (our
    # layer only); None: the whole batch
    bn_ghost: int | None = None
    # what the BN layers compute: bn (Ioffe & Szegedy 2015) | brn (Batch Renormalization, Ioffe 2017; our layer only)
    # | l1, l2, linf (lp normalisation, Santurkar et al. 2018 Sec. 4: divided by the centred batch's mean absolute
    # deviation, root mean square or largest absolute value; bnrepro/nn/lpnorm.py)
    norm: str = "bn"
    # brn: r and d clipped to r_max and d_max, which are 1 and 0 for the first warmup_steps training steps, then
    # grow linearly to reach their values at r_max_steps and d_max_steps (the paper's schedule and values)
    brn_r_max: float = 3.0
    brn_d_max: float = 5.0
    brn_warmup_steps: int = 5000
    brn_r_max_steps: int = 40_000
    brn_d_max_steps: int = 25_000
    # noisy BN (Santurkar et al. 2018, Algorithm 1; bnrepro/nn/noise.py): in training, after each BN layer (with
    # bn=none, where BN would sit with bn=before), a <- s * a + m with, per unit and step, mu ~ U(-mu, mu) and
    # sigma ~ U(1, sigma), and per sample, m ~ U(mu - r_mu, mu + r_mu) and s ~ N(sigma, r_sigma); the paper's values
    bn_noise: bool = False
    bn_noise_mu: float = 0.5  # n_mu
    bn_noise_sigma: float = 1.25  # n_sigma
    bn_noise_r_mu: float = 0.1  # r_mu
    bn_noise_r_sigma: float = 0.1  # r_sigma

    def check(self) -> None:
        check_choice(self.activation, "activation", self.activations)
        check_choice(self.bn, "bn", self.bn_modes)
        check_choice(self.bn_impl, "bn_impl", BN_IMPLS)
        check_choice(self.init, "init", INITS)
        check(self.init_std > 0, "init_std", self.init_std, "a positive number")
        check(self.bn_eps > 0, "bn_eps", self.bn_eps, "a positive number")
        check(self.bn_momentum is None or 0.0 <= self.bn_momentum <= 1.0, "bn_momentum", self.bn_momentum,
              "null (cumulative average) or 0 <= momentum <= 1")
        check(self.bn_ghost is None or (self.bn_ghost >= 2 and self.bn != "none" and self.bn_impl == "bnrepro"),
              "bn_ghost", self.bn_ghost, "null, or a sub-batch size >= 2 with bn before or after and "
              "bn_impl=bnrepro (ghost batches are our layer's)")
        check_choice(self.norm, "norm", NORMS)
        check(self.norm == "bn" or (self.bn != "none" and self.bn_impl == "bnrepro" and self.bn_ghost is None),
              "norm", self.norm, "bn, or brn, l1, l2, linf with bn before or after, bn_impl=bnrepro and no bn_ghost")
        check(self.brn_r_max >= 1, "brn_r_max", self.brn_r_max, "r_max >= 1")
        check(self.brn_d_max >= 0, "brn_d_max", self.brn_d_max, "d_max >= 0")
        check(self.brn_warmup_steps >= 0, "brn_warmup_steps", self.brn_warmup_steps, "a step count >= 0")
        for key in ("brn_r_max_steps", "brn_d_max_steps"):
            check(getattr(self, key) >= self.brn_warmup_steps, key, getattr(self, key),
                  f"a step count >= brn_warmup_steps ({self.brn_warmup_steps})")
        for key in ("bn_noise_mu", "bn_noise_r_mu", "bn_noise_r_sigma"):
            check(getattr(self, key) >= 0, key, getattr(self, key), "a number >= 0")
        check(self.bn_noise_sigma >= 1, "bn_noise_sigma", self.bn_noise_sigma, "a number >= 1 (sigma ~ U(1, it))")

    def measures_bn_statistics(self) -> bool:
        """Whether BN's inference statistics (tracking.precise_bn_batches, ...) apply: they rewrite a running
        variance, which the lp layers do not keep."""
        return self.norm not in bnn.LP_ORDERS

    def check_batch_size(self, batch_size: int) -> None:
        """The training batch must split into whole ghost batches."""
        check(self.bn_ghost is None or batch_size % self.bn_ghost == 0, "bn_ghost", self.bn_ghost,
              f"a divisor of train.batch_size ({batch_size})")

    def min_batch_size(self) -> int:
        return 2 if self.bn != "none" else 1  # a fully connected BN's batch variance needs two samples per unit


def norm_layer(layer: type[nn.Module] | None, width: int, options: NetworkOptions) -> nn.Module | None:
    """A BN layer (`layer`: BatchNorm1d/2d, ours or torch's) over `width` features with the options' eps and
    momentum, in its ghost-batch form when options.bn_ghost is set, as Batch Renormalization with norm=brn, as lp
    normalisation with norm=l1, l2 or linf; None where the network has no BN."""
    if layer is None:
        return None
    if options.norm in bnn.LP_ORDERS:
        return LP_LAYERS[layer](width, bnn.LP_ORDERS[options.norm], eps=options.bn_eps, momentum=options.bn_momentum)
    if options.norm == "brn":
        return RENORM_LAYERS[layer](width, eps=options.bn_eps, momentum=options.bn_momentum, r_max=options.brn_r_max,
                                    d_max=options.brn_d_max, warmup_steps=options.brn_warmup_steps,
                                    r_max_steps=options.brn_r_max_steps, d_max_steps=options.brn_d_max_steps)
    if options.bn_ghost is not None:
        return GHOST_LAYERS[layer](width, options.bn_ghost, eps=options.bn_eps, momentum=options.bn_momentum)
    return layer(width, eps=options.bn_eps, momentum=options.bn_momentum)


def noise_layer(options: NetworkOptions) -> nn.Module | None:
    """Noisy BN's noise with the options' constants, or None without model.bn_noise."""
    if not options.bn_noise:
        return None
    return bnn.BatchNoise(options.bn_noise_mu, options.bn_noise_sigma, options.bn_noise_r_mu, options.bn_noise_r_sigma)


def norm_then_noise(norm: nn.Module | None, noise: nn.Module | None) -> Callable[[Tensor], Tensor] | None:
    """What a layer applies where BN sits: BN, BN then noisy BN's noise, the noise alone (without BN), or nothing."""
    if noise is None or norm is None:
        return norm if noise is None else noise
    return lambda z: noise(norm(z))


class NormSlot(nn.Module):
    """A hidden layer's BN slot: `norm` (BN or its variants) and `noise` (noisy BN's), either of them None."""

    norm: nn.Module | None
    noise: nn.Module | None

    @property
    def transform(self) -> Callable[[Tensor], Tensor] | None:
        """What the forward applies in BN's place (a property: a module stored as an attribute would be registered
        twice, under a second name in the state_dict)."""
        return norm_then_noise(self.norm, self.noise)


def noise_before(options: NetworkOptions) -> bool:
    """Whether a network's BN slot comes before the activation: with bn=before, and, for the noise alone, without
    BN (where Santurkar et al. put it in the network without BN: where BN would sit in theirs)."""
    return options.bn == "before" or (options.bn == "none" and options.bn_noise)


def init_weights(ops: Iterable[nn.Module], options: NetworkOptions) -> None:
    """"Small random Gaussian values" (Sec. 4.1), N(0, init_std), and zero biases; torch's default init as it is."""
    if options.init != "gaussian":
        return
    for op in ops:
        nn.init.normal_(op.weight, std=options.init_std)
        if op.bias is not None:
            nn.init.zeros_(op.bias)
