"""A small VGG-style conv net, with BN placed as in the MLP, for experiments beyond the paper's MNIST MLP.

(C, H, W) -> blocks of conv3x3 -> [BN] -> activation -> [BN], a 2x2 max-pool after every `pool_every` convs
-> flatten -> fully connected hidden layers, BN placed alike -> dropout -> linear -> logits.

Cost, measured at batch 60 on one CPU thread (thread CPU time of a step: forward, cross-entropy, backward, SGD):
the defaults, channels [8, 8, 16, 16] and hidden [128] on a 28x28 image (28 -> 14 -> 7), take about 11 ms a step
without BN and 13.5-14.5 ms with BN, ours and torch's within a few percent of each other; so a run of 5,000
steps is about a minute, plus about 1 s per evaluation of 10,000 test images. [16, 16, 32, 32] takes about
25 ms and 30 ms. Feature maps are channels-last (see __init__): in the default layout the same steps take
about 15 and 19 ms, most of the difference in the convolutions' backward and the max-pool.

Not stackable (`stack` is None): on CPU a step's time is the convolutions' arithmetic, not per-op overhead, and
three nets stacked as grouped convolutions took 0.8x (no BN) to 1.15x (BN) the time per model of three single
steps: short of what would pay for a stacked form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnrepro import nn as bnn
from bnrepro.models.base import Model
from bnrepro.models.options import (
    ACTIVATIONS,
    ACTIVATIONS_IN_PLACE,
    NetworkOptions,
    NormSlot,
    init_weights,
    noise_before,
    noise_layer,
    norm_layer,
)
from bnrepro.parts import check

# (conv layers' BN, fully connected layers' BN) of each implementation
BN_LAYERS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "bnrepro": (bnn.BatchNorm2d, bnn.BatchNorm1d),
    "torch": (nn.BatchNorm2d, nn.BatchNorm1d),
}


@dataclass
class CNNConfig(NetworkOptions):
    channels: list[int] = field(default_factory=lambda: [8, 8, 16, 16])  # one conv3x3 layer per entry
    pool_every: int = 2  # a 2x2 max-pool after every this many convs
    hidden: list[int] = field(default_factory=lambda: [128])  # fully connected layers after the convs
    activation: str = "relu"
    dropout: float = 0.0  # drop probability on the last hidden layer's output, in training

    def check(self) -> None:
        check(len(self.channels) > 0 and all(c > 0 for c in self.channels), "channels", list(self.channels),
              "a non-empty list of positive integers")
        check(self.pool_every > 0, "pool_every", self.pool_every, "a positive integer")
        check(all(h > 0 for h in self.hidden), "hidden", list(self.hidden), "a list of positive integers")
        check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "0 <= dropout < 1")
        super().check()

    def tap_widths(self) -> list[int]:
        return [*self.channels, *self.hidden]

    def pools(self) -> int:
        """2x2 max-pools in the conv stack (one after every pool_every convs)."""
        return len(self.channels) // self.pool_every

    def check_input_shape(self, shape: tuple[int, ...], data: str) -> None:
        """What the net needs of a data set's samples: images (C, H, W) that stay at least 1x1 through every pool.
        Keys are the run's: `data` (named `data`), `model.pool_every`."""
        check(len(shape) == 3, "data", data, f"a data set of images (C, H, W), which the conv net takes; {data}'s "
              f"samples have shape {tuple(shape)}")
        check(min(shape[1:]) >> self.pools() > 0, "model.pool_every", self.pool_every,
              f"few enough pools ({len(self.channels)} convs // pool_every) that {data}'s {shape[1]}x{shape[2]} "
              "images stay at least 1x1")


class Layer(NormSlot):
    """A conv or linear op -> [BN [noise]] -> activation -> [BN [noise]]; the forward reads `op` and `transform`
    (BN, then noisy BN's noise if any; the noise alone without BN, before the activation) directly."""

    def __init__(self, op: nn.Conv2d | nn.Linear, norm: nn.Module | None, noise: nn.Module | None) -> None:
        super().__init__()
        self.op, self.norm, self.noise = op, norm, noise


class CNN(Model):
    Config = CNNConfig
    eval_chunk = 1000  # (1000, 8, 28, 28) float activations are 25 MB each; the whole test set would be 10x

    def __init__(self, cfg: CNNConfig | None = None, *, input_shape: Sequence[int] = (1, 28, 28),
                 num_classes: int = 10, **settings: Any) -> None:
        super().__init__(cfg, input_shape=input_shape, num_classes=num_classes, **settings)
        c = self.cfg
        c.check_input_shape(self.input_shape, "the input")
        self.act, self.act_in_place = ACTIVATIONS[c.activation], ACTIVATIONS_IN_PLACE[c.activation]
        self.bn_before = noise_before(c)
        bn_2d, bn_1d = BN_LAYERS[c.bn_impl] if c.bn != "none" else (None, None)
        bias = c.bn != "before"  # BN's beta replaces the bias it would cancel anyway (Sec. 3.2)

        in_channels, height, width = self.input_shape
        # pool after conv i (0-based) when (i + 1) is a multiple of pool_every
        self.pool_after = [(i + 1) % c.pool_every == 0 for i in range(len(c.channels))]
        pools = c.pools()
        widths = [in_channels, *c.channels]
        self.convs = nn.ModuleList(
            Layer(nn.Conv2d(a, b, 3, padding=1, bias=bias), norm_layer(bn_2d, b, c), noise_layer(c))
            for a, b in zip(widths[:-1], widths[1:])
        )
        widths = [c.channels[-1] * (height >> pools) * (width >> pools), *c.hidden]
        self.fcs = nn.ModuleList(
            Layer(nn.Linear(a, b, bias=bias), norm_layer(bn_1d, b, c), noise_layer(c))
            for a, b in zip(widths[:-1], widths[1:])
        )
        self.out = nn.Linear(widths[-1], num_classes)
        init_weights([*(layer.op for layer in [*self.convs, *self.fcs]), self.out], c)
        self.tap_names = [name for name, _, _ in self._named_layers()]
        # Channels-last conv weights make every conv output, and so every feature map, channels-last: (B, H, W, C)
        # in memory, the layout in which CPU convs and max-pool run fastest (ours and torch's BN keep it).
        self.to(memory_format=torch.channels_last)

    def _named_layers(self) -> list[tuple[str, str, Layer]]:
        """(layer name, module path, layer) of each hidden layer, first to last: conv1.., then fc1.."""
        return ([(f"conv{i + 1}", f"convs.{i}", layer) for i, layer in enumerate(self.convs)]
                + [(f"fc{i + 1}", f"fcs.{i}", layer) for i, layer in enumerate(self.fcs)])

    def norm_params(self) -> dict[str, str]:
        return {name: f"{path}.norm" for name, path, layer in self._named_layers() if layer.norm is not None}

    def weight_params(self) -> dict[str, str]:
        return {**{name: f"{path}.op.weight" for name, path, _ in self._named_layers()}, "out": "out.weight"}

    def _hidden(self, z: Tensor, norm: Callable[[Tensor], Tensor] | None, taps: list[Tensor] | None,
                unit: int | None) -> Tensor:
        """[norm] -> activation -> [norm] of a conv or linear output z, recording the activation's input as a tap;
        norm: what the layer applies in BN's place (Layer.transform)."""
        if self.bn_before:
            z = norm(z)
        if taps is not None:
            # one unit (a conv layer's channel) copied out over batch and positions, so z can die at once
            taps.append(z if unit is None else torch.flatten(z[:, unit].clone()))
        # in place where nothing needs z any more: no backward to come, and no tap holding all of it
        x = self.act_in_place(z) if not torch.is_grad_enabled() and (taps is None or unit is not None) else self.act(z)
        if norm is not None and not self.bn_before:
            x = norm(x)
        return x

    def forward(self, x: Tensor, taps: list[Tensor] | None = None, unit: int | None = None) -> Tensor:
        """x: (B, C, H, W) -> logits (B, classes). If `taps` is a list, each hidden activation's input is appended
        in layer order: (B, channels, H, W) per conv layer, (B, units) per fully connected layer; or for one
        `unit`, that channel's or unit's values, (B * H * W,) or (B,)."""
        # F.conv2d / F.linear on the layers' tensors, not module calls: the same ops, without the per-call
        # overhead that at batch 60 on CPU is a noticeable part of a small layer's time
        x = x.contiguous(memory_format=torch.channels_last)  # free for one-channel images: the same memory
        for layer, pool in zip(self.convs, self.pool_after):
            conv = layer.op
            z = F.conv2d(x, conv.weight, conv.bias, padding=1)  # (B, C_out, H, W): padding 1 keeps H, W
            x = self._hidden(z, layer.transform, taps, unit)
            if pool:
                x = F.max_pool2d(x, 2)  # (B, C_out, H // 2, W // 2)
        x = x.flatten(1)  # (B, C_last * H' * W')
        for layer in self.fcs:
            x = self._hidden(F.linear(x, layer.op.weight, layer.op.bias), layer.transform, taps, unit)  # (B, units)
        x = F.dropout(x, self.cfg.dropout, self.training)  # on the last hidden output only, as is usual
        return F.linear(x, self.out.weight, self.out.bias)  # (B, classes)

