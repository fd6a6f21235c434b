"""The step's loss and gradients recomputed at other parameter values, on the step's batch, for probes that ask
"what would the gradient be there" (ics, landscape).

Each evaluation runs the model functionally (torch.func.functional_call) on copies of its buffers, so BN's
running statistics and batch counts stay as they were; the parameters it differentiates are fresh leaves, so no
.grad is touched; and it draws from the global RNG at the state the probe found, restored afterwards, so every
evaluation of one probe call draws the same numbers (one dropout mask) and the run's stream goes on as without the
probe. The model stays in training mode: BN normalises by the statistics of the step's batch, as in the step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.func import functional_call

from bnrepro.probes.base import ProbeView


class Replay:
    """`replay(values, wrt)`: the step's loss at the parameters in `values` (by name; every other one at its
    current value) and its gradients w.r.t. the parameters named in `wrt`, there."""

    def __init__(self, view: ProbeView) -> None:
        if view.batch is None or view.loss is None:
            raise ValueError("this probe recomputes the step on its batch, which a model trained in a stack does "
                             "not keep (Probe.stackable is False: such jobs train alone)")
        self.model, (self.inputs, self.targets), self.loss = view.model, view.batch, view.loss
        self.params = {name: p.detach() for name, p in view.model.named_parameters()}
        self.buffers = dict(view.model.named_buffers())
        device = next(iter(self.params.values())).device
        self.devices = [device] if device.type == "cuda" else []
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state(device) if self.devices else None

    def __call__(self, values: Mapping[str, Tensor], wrt: Sequence[str]) -> tuple[Tensor, list[Tensor]]:
        """(the loss, a 0-dim tensor; the gradients of `wrt`, in order) at `values`."""
        params = {**self.params, **{name: t.detach() for name, t in values.items()}}
        leaves = [params[name].detach().requires_grad_() for name in wrt]
        params.update(zip(wrt, leaves))
        with self._same_draws(), torch.enable_grad():
            loss = self.loss(self._forward(params), self.targets)
            grads = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
        return loss.detach(), list(grads)

    def taps(self, unit: int) -> list[Tensor]:
        """The model's taps on the step's batch at the current weights, in training mode (BN normalising by the
        batch, any noise layer drawing): each tap's `unit`-th unit, (B,) or (B * positions,), as Model.forward
        appends them."""
        taps: list[Tensor] = []
        with self._same_draws(), torch.no_grad():
            self._forward(self.params, taps, unit)
        return taps

    def _forward(self, params: Mapping[str, Tensor], taps: list[Tensor] | None = None,
                 unit: int | None = None) -> Tensor:
        buffers = {name: b.clone() for name, b in self.buffers.items()}  # BN's running statistics move in place
        return functional_call(self.model, {**params, **buffers}, (self.inputs,), {"taps": taps, "unit": unit})

    @contextmanager
    def _same_draws(self) -> Iterator[None]:
        """The global RNG at the state the probe found, and back to where it was after."""
        with torch.random.fork_rng(self.devices):
            torch.set_rng_state(self.rng)
            if self.cuda_rng is not None:
                torch.cuda.set_rng_state(self.cuda_rng, self.devices[0])
            yield


def flat_norm(tensors: Sequence[Tensor]) -> Tensor:
    """The L2 norm of the tensors taken as one vector (0-dim)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))
