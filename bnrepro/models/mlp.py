"""The paper's MNIST network (Sec. 4.1): 784 -> hidden sigmoid layers -> 10, optionally with BN; and K of them
stacked into one (`StackedMLP`), which a vectorized sweep trains at once.

The forward is written once (`mlp_forward`) for one network and for K stacked ones: the two differ only in
the ops they hand it. A stack keeps every tensor with a leading model dim K; each model keeps its own
weights, BN statistics, batches and learning rate, and every operation runs on all K at once (torch.bmm over
the model dim), so a step costs one model's per-op overhead plus K models' arithmetic. On this CPU a bmm
slice is bit for bit the product F.linear computes, so a stacked model reproduces the numbers of the same
model trained alone.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnrepro import nn as bnn
from bnrepro.models.base import Model
from bnrepro.models.options import (
    ACTIVATIONS,
    NetworkOptions,
    NormSlot,
    init_weights,
    noise_before,
    noise_layer,
    norm_layer,
)
from bnrepro.models.sparse import SparseRows
from bnrepro.nn import batch_norm_stacked, cpu_kernel
from bnrepro.parts import check

BN_LAYERS = {"bnrepro": bnn.BatchNorm1d, "torch": nn.BatchNorm1d}
Linear = Callable[[Any, Tensor, Tensor | None], Tensor]  # (x, weight, bias) -> x W^T + b


@dataclass
class MLPConfig(NetworkOptions):
    hidden: list[int] = field(default_factory=lambda: [100, 100, 100])  # the paper's 3 x 100 (Sec. 4.1)
    # the smallest std at which the network without BN leaves chance by step 500 (reports/selection; the YAML's too)
    init_std: float = 0.2
    dropout: float = 0.0  # drop probability on the last hidden layer's output, in training (as the CNN's)

    def check(self) -> None:
        self.check_widths()
        check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "0 <= dropout < 1")
        super().check()

    def check_widths(self) -> None:
        check(len(self.hidden) > 0 and all(h > 0 for h in self.hidden), "hidden", list(self.hidden),
              "a non-empty list of positive integers")

    def widths(self) -> list[int]:
        """The hidden layers' widths, first to last."""
        return list(self.hidden)

    def tap_widths(self) -> list[int]:
        return self.widths()


@dataclass
class DeepMLPConfig(MLPConfig):
    """The MLP as `depth` hidden layers of `width` units each: depth is one number to sweep (model=deep_mlp).

    A class of its own, so that model=mlp's schema, and with it every existing run's config digest, stays as it
    was. `hidden` stays null: depth and width decide the layers, and a list beside them would contradict them.
    """

    hidden: list[int] | None = None
    depth: int = 3
    width: int = 100

    def check_widths(self) -> None:
        check(self.hidden is None, "hidden", None if self.hidden is None else list(self.hidden),
              "null with model=deep_mlp (model.depth and model.width decide the hidden layers)")
        check(self.depth > 0, "depth", self.depth, "a positive number of hidden layers")
        check(self.width > 0, "width", self.width, "a positive number of units per hidden layer")

    def widths(self) -> list[int]:
        return [self.width] * self.depth


class HiddenLayer(NormSlot):
    """Linear -> [BN [noise]] -> activation -> [BN [noise]]; `bn` says where BN sits, if anywhere (noise without
    BN sits before the activation)."""

    def __init__(self, fan_in: int, width: int, bn: str, norm: nn.Module | None, noise: nn.Module | None) -> None:
        super().__init__()
        # BN's beta replaces the bias it would cancel anyway (Sec. 3.2)
        self.linear = nn.Linear(fan_in, width, bias=bn != "before")
        self.norm, self.noise = norm, noise


def mlp_forward(x: Any, layers: Sequence[tuple[Tensor, Tensor | None, Callable | None]],
                out: tuple[Tensor, Tensor | None], linear: Linear, act: Callable[[Tensor], Tensor],
                bn_before: bool, taps: list[Tensor] | None, unit: int | None, dropout: float = 0.0) -> Tensor:
    """The MLP's forward for one network, x (B, in) -> (B, classes), or K stacked ones, (K, B, in) -> (K, B, classes).

    layers: each hidden layer's (weight, bias, norm or None); out: the output layer's (weight, bias); `linear`
    and `act` are the ops (a stack's run on all K models at once). Each hidden activation's input is appended
    to `taps`, or only its `unit`-th column (copied out, so the whole (B, width) tensor can die at once).
    dropout: the drop probability on the last hidden output (a model alone, in training; 0 draws nothing).
    """
    for weight, bias, norm in layers:
        z = linear(x, weight, bias)
        if bn_before:
            z = norm(z)
        if taps is not None:
            taps.append(z if unit is None else z[..., unit].clone())
        x = act(z)
        if norm is not None and not bn_before:
            x = norm(x)
    if dropout:
        x = F.dropout(x, dropout, training=True)
    return linear(x, *out)


def linear_or_sparse(x: Tensor | SparseRows, weight: Tensor, bias: Tensor | None) -> Tensor:
    # F.linear instead of the Linear modules' own calls (the same op, so the same bits): on CPU at batch 60
    # every module call costs about as much as the arithmetic
    return F.linear(x, weight, bias) if isinstance(x, Tensor) else x.linear(weight, bias)


class MLP(Model):
    Config = MLPConfig
    stack_keys = ("init", "init_std")  # they only decide the initial weights, which a stack keeps per model

    def __init__(self, cfg: MLPConfig | None = None, *, input_shape: Sequence[int] = (1, 28, 28),
                 num_classes: int = 10, **settings: Any) -> None:
        super().__init__(cfg, input_shape=input_shape, num_classes=num_classes, **settings)
        c = self.cfg
        self.act = ACTIVATIONS[c.activation]
        self.bn_before = noise_before(c)
        bn_layer = None if c.bn == "none" else BN_LAYERS[c.bn_impl]
        widths = [math.prod(self.input_shape), *c.widths()]
        self.hidden = nn.ModuleList(
            HiddenLayer(a, b, c.bn, norm_layer(bn_layer, b, c), noise_layer(c)) for a, b in zip(widths[:-1], widths[1:])
        )
        self.out = nn.Linear(widths[-1], num_classes)
        init_weights([*(h.linear for h in self.hidden), self.out], c)
        self.tap_names = [f"h{i}" for i in range(1, len(self.hidden) + 1)]

    def norm_params(self) -> dict[str, str]:
        return {n: f"hidden.{i}.norm" for i, (n, h) in enumerate(zip(self.tap_names, self.hidden))
                if h.norm is not None}

    def weight_params(self) -> dict[str, str]:
        return {**{n: f"hidden.{i}.linear.weight" for i, n in enumerate(self.tap_names)}, "out": "out.weight"}

    def prepare_inputs(self, x: Tensor, evaluation: bool) -> Tensor | SparseRows:
        """Images (N, *input_shape) flattened to (N, in) (a view); the test set kept sparse, since the first layer
        can then skip the zero pixels (about 87% of the paper's binary MNIST): evaluation costs a few percent
        of a run instead of a quarter."""
        flat = x.reshape(x.shape[0], -1)
        return SparseRows.from_dense(flat) if evaluation else flat

    def forward(self, x: Tensor | SparseRows, taps: list[Tensor] | None = None,
                unit: int | None = None) -> Tensor:
        """x: (B, in), or SparseRows of that shape -> logits (B, classes); taps as `mlp_forward`'s."""
        layers = [(h.linear.weight, h.linear.bias, h.transform) for h in self.hidden]
        return mlp_forward(x, layers, (self.out.weight, self.out.bias), linear_or_sparse, self.act,
                           self.bn_before, taps, unit, self.cfg.dropout if self.training else 0.0)

    @classmethod
    def stackable(cls, cfg: Any) -> bool:
        # torch's BN layer, ghost batches, Batch Renormalization and lp normalisation have no stacked form; dropout's
        # masks and noisy BN's noise come from torch's global RNG in a model's own order, which K models drawing at
        # once cannot reproduce
        return ((cfg.bn == "none" or cfg.bn_impl == "bnrepro") and not cfg.dropout
                and not getattr(cfg, "bn_noise", False) and getattr(cfg, "bn_ghost", None) is None
                and getattr(cfg, "norm", "bn") == "bn")

    @classmethod
    def stack(cls, models: Sequence[MLP]) -> StackedMLP:
        return StackedMLP(models)


class DeepMLP(MLP):
    """The MLP with `depth` hidden layers of `width` units (DeepMLPConfig): depth as one sweepable number."""

    Config = DeepMLPConfig


# ATen's elementwise loops compute a tensor's last (numel % 2 vector widths) values with scalar code, whose
# exp differs from the vector one in the last bit now and then. A model alone gets its slice's tail from
# scalar code; stacked, the same values would sit mid-tensor. An output whose model stride is padded
# keeps the K slices from merging into one loop, so each slice runs exactly the loop it runs alone.
_PAD = 16
# activations with a transcendental forward and their autograd backward (relu is exact either way)
_EXACT = {torch.sigmoid: torch.ops.aten.sigmoid_backward, torch.tanh: torch.ops.aten.tanh_backward}
_STEP_SOURCE = Path(__file__).with_name("stacked_cpu.cpp")
_STEP_ACTIVATIONS = {torch.sigmoid: 0, torch.tanh: 1, torch.relu: 2}  # stacked_cpu.cpp's Activation
# a stacked step's tensors, per linear layer, in the order train_step in stacked_cpu.cpp takes them
_STEP_TENSORS = ("linear.weight", "linear.bias", "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var",
                 "norm.num_batches_tracked")


class _PerModelActivation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, act) -> Tensor:  # z: (K, ...) -> act(z), each slice as if alone
        z = z if z[0].is_contiguous() else z.contiguous()
        k, n = z.shape[0], z[0].numel()
        y = z.new_empty(k, n + _PAD)[:, :n].view(z.shape)
        act(z, out=y)
        ctx.save_for_backward(y)
        ctx.backward_fn = _EXACT[act]
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, None]:
        (y,) = ctx.saved_tensors
        return ctx.backward_fn(dy, y), None


class StackedMLP:
    """Built from K MLPs of one architecture (their initial or checkpointed state); `export` writes model k back.

    Parameters are leaf tensors stacked from the MLPs' state_dicts: weights (K, out, in), biases, gammas and
    betas (K, 1, out), BN running statistics (K, 1, width), so that they broadcast over a (K, B, width) batch.
    """

    def __init__(self, models: Sequence[MLP]) -> None:
        template = models[0]
        if template.cfg.dropout:
            raise ValueError("MLPs with dropout do not stack (MLP.stackable)")
        self.k = len(models)
        self.act, self.bn_before = template.act, template.bn_before
        states = [m.state_dict() for m in models]
        self.shapes = {name: t.shape for name, t in states[0].items()}
        # one batch count per BN layer, shared by the K models (they step together): (name -> 0-dim long)
        self.num_batches: dict[str, Tensor] = {}
        for name in self.shapes:
            if name.endswith("num_batches_tracked"):
                counts = {int(state[name]) for state in states}
                if len(counts) > 1:
                    raise ValueError(f"stacked models must have seen the same number of batches, got {sorted(counts)}")
                self.num_batches[name] = torch.tensor(counts.pop())
        self.tensors: dict[str, Tensor] = {}
        for name, shape in self.shapes.items():
            if name.endswith("num_batches_tracked"):
                continue
            stacked = torch.stack([s[name] for s in states])
            if len(shape) == 1:  # (K, width) -> (K, 1, width): broadcasts over the batch dim
                stacked = stacked.unsqueeze(1)
            self.tensors[name] = stacked.requires_grad_(not name.endswith(("running_mean", "running_var")))
        self.params = [t for t in self.tensors.values() if t.requires_grad]
        self.momentum, self.eps = _bn_settings(template)
        self.training = True
        n_hidden = len(template.hidden)
        # mlp_forward's layers: (weight, bias, norm), fixed, since the parameters move in place
        self._layers = [(self.tensors[f"hidden.{i}.linear.weight"], self.tensors.get(f"hidden.{i}.linear.bias"),
                         functools.partial(self._norm, i) if self._has_norm(i) else None) for i in range(n_hidden)]
        self._out = (self.tensors["out.weight"], self.tensors["out.bias"])
        # train_step's tensors, per linear layer, as stacked_cpu.cpp takes them
        self._step_layers = [[self.tensors.get(p + name, self.num_batches.get(p + name)) for name in _STEP_TENSORS]
                             for p in (f"hidden.{i}." for i in range(n_hidden))]
        self._step_layers.append([*self._out, *[None] * 5])

    def train(self, mode: bool = True) -> StackedMLP:
        self.training = mode
        return self

    def eval(self) -> StackedMLP:
        return self.train(False)

    def _norm(self, i: int, x: Tensor) -> Tensor:
        p = f"hidden.{i}.norm."
        get = self.tensors.get
        return batch_norm_stacked(x, get(p + "weight"), get(p + "bias"), get(p + "running_mean"),
                                  get(p + "running_var"), training=self.training, momentum=self.momentum,
                                  num_batches_tracked=self.num_batches.get(p + "num_batches_tracked"), eps=self.eps)

    def _has_norm(self, i: int) -> bool:
        return f"hidden.{i}.norm.running_mean" in self.tensors or f"hidden.{i}.norm.weight" in self.tensors

    def _act(self, z: Tensor) -> Tensor:
        return _PerModelActivation.apply(z, self.act) if self.act in _EXACT else self.act(z)

    def __call__(self, x: Tensor | SparseRows, taps: list[Tensor] | None = None,
                 unit: int | None = None) -> Tensor:
        """x: (K, B, in), each model its own batch, or (B, in) shared by all (the test set) -> logits (K, B, 10);
        taps as MLP.forward's, with a leading model dim."""
        return mlp_forward(x, self._layers, self._out, _linear, self._act, self.bn_before, taps, unit)

    def train_step(self, train_x: Tensor, train_y: Tensor, idx: Tensor, active: Sequence[bool],
                   max_loss: float) -> list[float]:
        """Forward and backward of one step, each model on its own batch: rows idx (K * B,) of train_x (N, in)
        and train_y (N,), model k's B rows k-th. Returns each model's cross-entropy; the models in `active`
        whose loss is at most max_loss (not NaN) get their gradients in .grad, the others zero slices.

        On CPU it is one call into stacked_cpu.cpp, which runs the ops of this forward and autograd's backward
        in C++ (the same bits, without a hundred Python calls and autograd's bookkeeping); elsewhere, or where
        it cannot be built, those ops here.
        """
        if train_x.is_cpu and cpu_kernel.enabled and (kernel := step_kernel()) is not None:
            return kernel.train_step(train_x, train_y, idx, self._step_layers, _STEP_ACTIVATIONS[self.act],
                                     self.bn_before, self.momentum, self.eps, list(active), max_loss).tolist()
        xb = train_x.index_select(0, idx).view(self.k, -1, train_x.shape[1])
        yb = train_y.index_select(0, idx).view(self.k, -1)
        logits = self(xb)  # (K, B, 10)
        # one cross-entropy per model: the same kernel, and so the same loss and gradient bits, as alone
        losses = [F.cross_entropy(lk, yk) for lk, yk in zip(logits.unbind(0), yb.unbind(0))]
        values = torch.stack(losses).tolist()
        chosen = [loss for loss, value, on in zip(losses, values, active) if on and value <= max_loss]
        if chosen:
            for p in self.params:
                p.grad = None
            torch.autograd.backward(chosen)
        return values

    def member_grads(self, k: int) -> dict[str, Tensor | None]:
        """Model k's gradients, by the names of its parameters alone; each a view into the stacked gradient."""
        return {name: None if t.grad is None else t.grad[k] for name, t in self.tensors.items() if t.requires_grad}

    def export(self, k: int, model: MLP) -> MLP:
        """Model k's state into `model` (an MLP of this architecture), e.g. to checkpoint it as a single run."""
        with torch.no_grad():
            state = {name: (self.num_batches[name].clone() if name in self.num_batches
                            else self.tensors[name][k].reshape(shape))
                     for name, shape in self.shapes.items()}
        model.load_state_dict(state)
        return model


class _StackedLinear(torch.autograd.Function):
    """x (K, B, in) @ weight (K, out, in)^T + bias (K, 1, out) -> (K, B, out), with F.linear's gradients.

    baddbmm and bmm give each slice the bits F.linear gives that model alone. Autograd's bmm backward would
    form the weight gradient as (x^T g)^T; F.linear's forms g^T x (its weight is a transposed operand),
    which rounds differently, so the backward is written out in F.linear's orientation.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        wt = weight.transpose(1, 2)  # (K, in, out)
        return torch.bmm(x, wt) if bias is None else torch.baddbmm(bias, x, wt)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        dx = torch.bmm(g, weight) if need_x else None
        dw = torch.bmm(g.transpose(1, 2), x) if need_w else None
        db = g.sum(1, keepdim=True) if need_b and ctx.has_bias else None
        return dx, dw, db


def _linear(x: Tensor | SparseRows, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x (K, B, in), or (B, in) shared by all models (the test set, dense or SparseRows), weight (K, out, in)
    -> (K, B, out).

    A shared x is one (B, in) @ (in, K*out) product, whose column blocks are again the bits of each model's
    own product (F.linear, or SparseRows.linear as MLP uses it); it runs only under no_grad (evaluation).
    """
    if isinstance(x, Tensor) and x.dim() == 3:
        return _StackedLinear.apply(x, weight, bias)
    k, out, fan_in = weight.shape
    flat_weight, flat_bias = weight.reshape(k * out, fan_in), None if bias is None else bias.reshape(k * out)
    flat = linear_or_sparse(x, flat_weight, flat_bias)
    return flat.view(x.shape[0], k, out).transpose(0, 1)  # (K, B, out), a view


def step_kernel() -> ModuleType | None:
    """The stacked training step's compiled module (stacked_cpu.cpp), or None where it cannot be built."""
    return cpu_kernel.build(_STEP_SOURCE, "stacked models train on torch ops instead (the same bits, ~1.5x "
                                          "slower steps)")


def _bn_settings(model: MLP) -> tuple[float | None, float]:
    """(momentum, eps) of the BN layers, the same in every layer and model of a stack."""
    return (model.cfg.bn_momentum, model.cfg.bn_eps) if model.cfg.bn != "none" else (None, 0.0)
