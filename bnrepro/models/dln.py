"""A deep linear network (Santurkar et al. 2018, Sec. 2.2 and Appendix A): `depth` bias-free `width` x `width`
linear layers, x -> W_depth ... W_1 x, with optional BN after each layer but the last.

It is the MLP's forward (mlp_forward) with the identity for the activation: without BN the network is a product of
matrices, so its loss landscape is known in closed form and every effect of BN is BN's own. No biases by default:
the task y = A x has no offset, and a bias-free network stays the plain matrix product the DLN literature analyses
(`bias: true` adds them; with BN, BN's beta takes their place in the normalised layers, as in the MLP).

Init: N(0, init_std) with init_std = 1/sqrt(width) (0.316 for 10 x 10): each layer keeps E||W h||^2 = ||h||^2, so
the input's scale neither explodes nor vanishes in expectation over 25 layers. Santurkar et al. do not state their
init; torch's default (std 1/sqrt(3 width)) would shrink the input about 1e6-fold over 25 layers. With another
width, set init_std to 1/sqrt(width).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from bnrepro.models.base import Model
from bnrepro.models.mlp import BN_LAYERS, linear_or_sparse, mlp_forward
from bnrepro.models.options import NetworkOptions, init_weights, norm_layer
from bnrepro.parts import check


@dataclass
class DLNConfig(NetworkOptions):
    # linear: there is no activation to put BN before or after, so `before` is the one placement
    activations: ClassVar[tuple[str, ...]] = ("identity",)
    bn_modes: ClassVar[tuple[str, ...]] = ("none", "before")
    depth: int = 25  # linear layers, the last one the output
    width: int = 10  # each hidden layer's units; the first takes the input's features, the last gives the outputs
    bias: bool = False
    activation: str = "identity"
    init_std: float = 1 / math.sqrt(10)  # 1/sqrt(width) at the default width

    def check(self) -> None:
        check(self.depth >= 2, "depth", self.depth, "an integer >= 2 (one hidden layer at least)")
        check(self.width > 0, "width", self.width, "a positive integer")
        super().check()

    def tap_widths(self) -> list[int]:
        return [self.width] * (self.depth - 1)


class LinearLayer(nn.Module):
    """Linear -> [BN]: one hidden layer, its parameters named as the MLP's (`linear.weight`, `norm.weight`)."""

    def __init__(self, fan_in: int, width: int, bias: bool, norm: nn.Module | None) -> None:
        super().__init__()
        self.linear = nn.Linear(fan_in, width, bias=bias)
        self.norm = norm


def identity(z: Tensor) -> Tensor:
    return z


class DLN(Model):
    Config = DLNConfig

    def __init__(self, cfg: DLNConfig | None = None, *, input_shape: Sequence[int] = (10,), num_classes: int = 10,
                 **settings: Any) -> None:
        """input_shape: one sample's shape, flattened into the first layer; num_classes: the output width."""
        super().__init__(cfg, input_shape=input_shape, num_classes=num_classes, **settings)
        c = self.cfg
        bn_layer = None if c.bn == "none" else BN_LAYERS[c.bn_impl]
        widths = [math.prod(self.input_shape), *[c.width] * (c.depth - 1)]
        # with BN before the (identity) activation its beta is the bias
        self.hidden = nn.ModuleList(LinearLayer(a, b, c.bias and bn_layer is None, norm_layer(bn_layer, b, c))
                                    for a, b in zip(widths[:-1], widths[1:]))
        self.out = nn.Linear(widths[-1], num_classes, bias=c.bias)
        init_weights([*(h.linear for h in self.hidden), self.out], c)
        self.tap_names = [f"h{i}" for i in range(1, c.depth)]

    def norm_params(self) -> dict[str, str]:
        return {n: f"hidden.{i}.norm" for i, (n, h) in enumerate(zip(self.tap_names, self.hidden))
                if h.norm is not None}

    def weight_params(self) -> dict[str, str]:
        return {**{n: f"hidden.{i}.linear.weight" for i, n in enumerate(self.tap_names)}, "out": "out.weight"}

    def prepare_inputs(self, x: Tensor, evaluation: bool) -> Tensor:
        return x.reshape(x.shape[0], -1)  # (N, features), a view

    def forward(self, x: Tensor, taps: list[Tensor] | None = None, unit: int | None = None) -> Tensor:
        """x (B, features) -> (B, outputs); taps: each hidden layer's output (after its BN), as the MLP's."""
        layers = [(h.linear.weight, h.linear.bias, h.norm) for h in self.hidden]
        return mlp_forward(x, layers, (self.out.weight, self.out.bias), linear_or_sparse, identity,
                           bn_before=self.cfg.bn == "before", taps=taps, unit=unit)
