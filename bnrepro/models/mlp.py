"""The paper's MNIST network (Sec. 4.1): 784 -> hidden sigmoid layers -> 10, optionally with BN."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnrepro import nn as bnn
from bnrepro.models.sparse import SparseRows

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "tanh": torch.tanh,
}
BN_LAYERS = {"bnrepro": bnn.BatchNorm1d, "torch": nn.BatchNorm1d}


class HiddenLayer(nn.Module):
    """Linear -> [BN] -> activation -> [BN]; `bn` says where BN sits, if anywhere."""

    def __init__(self, fan_in: int, width: int, bn: str, bn_layer: type[nn.Module] | None,
                 eps: float, momentum: float | None) -> None:
        super().__init__()
        self.bn_before = bn == "before"
        # BN's beta replaces the bias it would cancel anyway (Sec. 3.2)
        self.linear = nn.Linear(fan_in, width, bias=not self.bn_before)
        self.norm = bn_layer(width, eps=eps, momentum=momentum) if bn_layer is not None else None


class MLP(nn.Module):
    def __init__(self, hidden: Sequence[int] = (100, 100, 100), activation: str = "sigmoid",
                 bn: str = "none", bn_impl: str = "bnrepro", init: str = "gaussian", init_std: float = 0.05,
                 bn_eps: float = 1e-5, bn_momentum: float | None = 0.1, in_features: int = 784,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.bn_before = bn == "before"
        bn_layer = None if bn == "none" else BN_LAYERS[bn_impl]
        widths = [in_features, *hidden]
        self.hidden = nn.ModuleList(
            HiddenLayer(a, b, bn, bn_layer, bn_eps, bn_momentum) for a, b in zip(widths[:-1], widths[1:])
        )
        self.out = nn.Linear(widths[-1], num_classes)
        if init == "gaussian":  # "small random Gaussian values"; biases start at zero
            for linear in [*(h.linear for h in self.hidden), self.out]:
                nn.init.normal_(linear.weight, std=init_std)
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)

    @property
    def layer_names(self) -> list[str]:
        return [f"h{i}" for i in range(1, len(self.hidden) + 1)]

    def norms(self) -> dict[str, nn.Module]:
        """The BN layer of each hidden layer that has one, by layer name."""
        return {n: h.norm for n, h in zip(self.layer_names, self.hidden) if h.norm is not None}

    def forward(self, x: Tensor | SparseRows, act_inputs: list[Tensor] | None = None,
                unit: int | None = None) -> Tensor:
        """x: (B, 784), or SparseRows of that shape (evaluation: the first layer skips the zero pixels)
        -> logits (B, 10).

        If `act_inputs` is a list, the input of every hidden activation is appended to it in layer
        order: (B, width), or (B,) for one `unit`. That is what Figure 1(b, c) tracks (with BN before,
        the BN output). One unit is copied out so the (B, width) tensor dies at once: holding three
        (10000, 100) tensors through an evaluation costs more fresh memory than the percentiles cost.
        """
        # Plain loop, F.linear instead of the Linear modules' own calls (the same op, so the same bits):
        # on CPU at batch 60 every module call costs about as much as the arithmetic.
        for layer in self.hidden:
            linear = layer.linear
            if isinstance(x, Tensor):
                z = F.linear(x, linear.weight, linear.bias)
            else:
                z = x.linear(linear.weight, linear.bias)
            if self.bn_before:
                z = layer.norm(z)
            if act_inputs is not None:
                act_inputs.append(z if unit is None else z[:, unit].clone())
            x = self.act(z)
            if layer.norm is not None and not self.bn_before:
                x = layer.norm(x)
        return F.linear(x, self.out.weight, self.out.bias)
