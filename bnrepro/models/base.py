"""The model contract: all that evaluation, tracking, checkpoints, stacking and reports know of a model.

A model is an nn.Module subclass of `Model`, named in `conf/model/<name>.yaml` by `_target_`, with
- `Config`: its typed schema, a dataclass whose fields are the YAML file's keys, with the optional methods
  `check()` (raise bnrepro.parts.ConfigError for values out of range), `tap_widths()` (units or channels of
  each tap, so `tracking.unit` is checked before anything loads) and `min_batch_size()` (e.g. 2 with BN over
  a fully connected layer, whose statistics need two samples);
- `forward(x, taps, unit)`: logits, and on request the *taps*, the input to each hidden activation
  (what Figure 1(b, c) tracks: with BN before the activation, the BN output);
- `tap_names`: the taps' names, first to last (`h1`.. for an MLP's layers, `conv1`.. for a conv net's);
- `norm_params()`: the normalisation layers whose gamma/beta gradient norms every run logs, by layer name;
- `weight_params()`: each linear or conv layer's weight, by layer name (for probes); `layer_params()`, all of
  each layer's parameters, follows from it and `norm_params()` unless a model says otherwise;
- `prepare_inputs(x, evaluation)`: the form the model wants a whole split in, made once per run
  (e.g. the MLP flattens images, and keeps the test set sparse);
- `stack(models)`: K models of one architecture as one stacked model (`Stacked`), or None if the class
  cannot stack; `stack_keys` are the config keys that may differ between the models of a stack.

A tap is one tensor per layer: (B, units) for a fully connected layer, (B, channels, H, W) for a conv layer.
Asked for one `unit`, a model appends only that unit's values, flattened over the batch and the positions:
(B,) or (B * H * W,), so a unit of a conv layer is a channel and its percentiles run over all images x
positions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from torch import Tensor, nn


class Model(nn.Module):
    Config: ClassVar[type]
    stack_keys: ClassVar[tuple[str, ...]] = ()  # config keys that may differ between the models of a stack
    eval_chunk: ClassVar[int | None] = None  # test samples per inference pass; None: the whole set at once

    def __init__(self, cfg: Any = None, *, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
                 **settings: Any) -> None:
        """cfg: a Config (default: the schema's defaults), with `settings` replacing single fields.
        input_shape: one sample's shape, (C, H, W) for images; num_classes: the logits' width."""
        super().__init__()
        self.cfg = dataclasses.replace(cfg if cfg is not None else self.Config(), **settings)
        self.input_shape, self.num_classes = tuple(input_shape), num_classes

    tap_names: list[str]

    def forward(self, x: Any, taps: list[Tensor] | None = None, unit: int | None = None) -> Tensor:
        raise NotImplementedError

    def norm_params(self) -> dict[str, str]:
        """Layer name -> the parameter-name prefix of its normalisation layer (`<prefix>.weight` is gamma,
        `<prefix>.bias` beta); empty without BN."""
        return {}

    def weight_params(self) -> dict[str, str]:
        """Layer name -> the parameter name of its weight, for every linear or conv layer, first to last."""
        return {}

    def layer_params(self) -> dict[str, list[str]]:
        """Layer name -> the names of all its parameters, first layer to last, as weight_params orders them: the
        weight, the other parameters of the module that holds it (its bias) and its normalisation layer's (gamma,
        beta). What a probe moves when it moves "layers 1..i-1" (Santurkar et al.'s ICS)."""
        names = [name for name, _ in self.named_parameters()]
        norms = self.norm_params()
        out = {}
        for layer, weight in self.weight_params().items():
            prefixes = (weight.rpartition(".")[0] + ".", *((norms[layer] + ".",) if layer in norms else ()))
            out[layer] = [weight, *(n for n in names if n != weight and n.startswith(prefixes))]
        return out

    def prepare_inputs(self, x: Tensor, evaluation: bool) -> Any:
        """A whole split (N, *input_shape) in the form forward takes; made once per run."""
        return x

    @classmethod
    def stack(cls, models: Sequence[Model]) -> Stacked | None:
        """K models of this class and one architecture trained as one, or None: this class does not stack."""
        return None

    @classmethod
    def stackable(cls, cfg: Any) -> bool:
        """Whether models of this config can stack (e.g. not with torch's own BN layer)."""
        return False


class Stacked(Protocol):
    """K models of one architecture trained in lockstep, each exactly as it trains alone.

    Each model keeps its own weights, BN statistics, batches and learning rate; every operation runs on all K
    at once, so a step costs one model's per-operation overhead plus K models' arithmetic.
    """

    k: int
    params: list[Tensor]  # leaf tensors (K, ...) that a stacked optimizer moves, each model's slice its own
    training: bool

    def train(self, mode: bool = True) -> Stacked: ...

    def eval(self) -> Stacked: ...

    def __call__(self, x: Any, taps: list[Tensor] | None = None, unit: int | None = None) -> Tensor:
        """x shared by all K models (the test set, as prepare_inputs made it) -> logits (K, B, classes);
        each tap (K, ...) as Model.forward's with a leading model dim."""

    def train_step(self, train_x: Tensor, train_y: Tensor, idx: Tensor, active: Sequence[bool],
                   max_loss: float) -> list[float]:
        """Forward and backward of one step, model k on rows idx[k*B:(k+1)*B] of train_x and train_y; returns
        each model's loss. Models in `active` whose loss is at most max_loss get their gradients, the others
        zero gradients."""

    def member_grads(self, k: int) -> dict[str, Tensor | None]:
        """Model k's gradients by the parameter names of the model alone (None before a backward)."""

    def export(self, k: int, model: Model) -> Model:
        """Model k's state into `model` (one of this architecture), e.g. to checkpoint it as a single run."""
