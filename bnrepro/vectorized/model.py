"""K models of one MLP architecture trained as one: every tensor gains a leading model dim K.

Each model keeps its own weights, BN statistics, batches and learning rate; every operation runs on all
K at once (torch.bmm over the model dim), so a step costs one model's per-op overhead plus K models'
arithmetic. On this CPU a bmm slice is bit-for-bit the product F.linear computes, so a stacked model
reproduces the numbers of the same model trained alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from bnrepro.models import MLP, SparseRows
from bnrepro.nn import batch_norm_stacked, cpu_kernel

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
        self.k = len(models)
        self.act, self.bn_before = template.act, template.bn_before
        self.layer_names = template.layer_names
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
        # train_step's tensors, per linear layer, as stacked_cpu.cpp takes them (fixed: parameters move in place)
        self._step_layers = [[self.tensors.get(p + name, self.num_batches.get(p + name)) for name in _STEP_TENSORS]
                             for p in (f"hidden.{i}." for i in range(len(self.layer_names)))]
        self._step_layers.append([self.tensors["out.weight"], self.tensors["out.bias"], *[None] * 5])

    def train(self, mode: bool = True) -> StackedMLP:
        self.training = mode
        return self

    def eval(self) -> StackedMLP:
        return self.train(False)

    def _get(self, name: str) -> Tensor | None:
        return self.tensors.get(name)

    def _norm(self, i: int, x: Tensor) -> Tensor:
        p = f"hidden.{i}.norm."
        return batch_norm_stacked(x, self._get(p + "weight"), self._get(p + "bias"), self._get(p + "running_mean"),
                                  self._get(p + "running_var"), training=self.training, momentum=self.momentum,
                                  num_batches_tracked=self.num_batches.get(p + "num_batches_tracked"), eps=self.eps)

    def has_norm(self, i: int) -> bool:
        return f"hidden.{i}.norm.running_mean" in self.tensors or f"hidden.{i}.norm.weight" in self.tensors

    def forward(self, x: Tensor | SparseRows, act_inputs: list[Tensor] | None = None,
                unit: int | None = None) -> Tensor:
        """x: (K, B, in), each model its own batch, or (B, in) shared by all (the test set) -> logits (K, B, 10).

        act_inputs as MLP.forward: each hidden layer's activation input, (K, B, width) or (K, B) for one unit.
        """
        for i in range(len(self.layer_names)):
            weight, bias = self.tensors[f"hidden.{i}.linear.weight"], self._get(f"hidden.{i}.linear.bias")
            z = _linear(x, weight, bias)
            if self.bn_before:
                z = self._norm(i, z)
            if act_inputs is not None:
                act_inputs.append(z if unit is None else z[:, :, unit].clone())
            x = _PerModelActivation.apply(z, self.act) if self.act in _EXACT else self.act(z)
            if self.has_norm(i) and not self.bn_before:
                x = self._norm(i, x)
        return _linear(x, self.tensors["out.weight"], self.tensors["out.bias"])

    __call__ = forward

    def train_step(self, train_x: Tensor, train_y: Tensor, idx: Tensor, active: Sequence[bool],
                   max_loss: float) -> list[float]:
        """Forward and backward of one step, each model on its own batch: rows idx (K * B,) of train_x (N, in)
        and train_y (N,), model k's B rows k-th. Returns each model's cross-entropy; the models in `active`
        whose loss is at most max_loss (not NaN) get their gradients in .grad, the others zero slices.

        On CPU it is one call into stacked_cpu.cpp, which runs the ops of this forward and autograd's backward
        in C++ (the same bits, ~1.5x faster at K = 3); elsewhere, or where it cannot be built, those ops here.
        """
        if train_x.is_cpu and cpu_kernel.enabled and (kernel := _step_kernel()) is not None:
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

    def bn_grad_norms(self) -> list[dict[str, float]]:
        """bnrepro.evaluation.bn_grad_norms of each model: its gamma and beta gradients' L2 norms."""
        keys, grads = [], []
        for label, attr in (("gamma", "weight"), ("beta", "bias")):
            for i, name in enumerate(self.layer_names):
                if (param := self.tensors.get(f"hidden.{i}.norm.{attr}")) is not None:
                    keys.append(f"grad_norm/{label}/{name}")
                    grads.append(param.grad)
        if not grads or any(g is None for g in grads):  # before the first step
            return [dict.fromkeys(keys, math.nan) for _ in range(self.k)]
        norms = torch.stack([torch.linalg.vector_norm(g, dim=(1, 2)) for g in grads], dim=1)  # (K, keys)
        return [dict(zip(keys, row)) for row in norms.tolist()]

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


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x (K, B, in), or (B, in) shared by all models (the test set, dense or SparseRows), weight (K, out, in)
    -> (K, B, out).

    A shared x is one (B, in) @ (in, K*out) product, whose column blocks are again the bits of each model's
    own product (F.linear, or SparseRows.linear as MLP uses it); it runs only under no_grad (evaluation).
    """
    if isinstance(x, Tensor) and x.dim() == 3:
        return _StackedLinear.apply(x, weight, bias)
    k, out, fan_in = weight.shape
    flat_weight, flat_bias = weight.reshape(k * out, fan_in), None if bias is None else bias.reshape(k * out)
    if isinstance(x, SparseRows):
        flat = x.linear(flat_weight, flat_bias)
    else:
        flat = torch.nn.functional.linear(x, flat_weight, flat_bias)
    return flat.view(x.shape[0], k, out).transpose(0, 1)  # (K, B, out), a view


def _step_kernel():
    return cpu_kernel.build(_STEP_SOURCE, "stacked models train on torch ops instead (the same bits, ~1.5x "
                                          "slower steps)")


def _bn_settings(model: MLP) -> tuple[float | None, float]:
    norms = list(model.norms().values())
    return (norms[0].momentum, norms[0].eps) if norms else (None, 0.0)
