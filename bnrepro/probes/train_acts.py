"""The tracked unit's activation input as training sees it, every `every` steps: percentiles over the step's batch
in training mode (BN normalising by that batch, noisy BN's noise drawn), where the evaluation's act/<tap>/p<q>
columns see the test set in inference mode (running statistics, no noise).

Noisy BN (Santurkar et al. 2018, Sec. 2.1) changes each unit's distribution at every step in training only, so only
this view shows the shift it puts back. Columns train_act/<tap>/p<q>, for the run's `tracking.unit` and
`tracking.percentiles` (the probe's YAML reads them from there). Not stackable: it recomputes the step's forward on
its batch (probes/replay.py), which only a model trained alone keeps; the RNG, the weights and BN's running
statistics stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bnrepro.models.base import Model
from bnrepro.parts import check
from bnrepro.probes.base import Probe, ProbeView
from bnrepro.probes.replay import Replay


@dataclass
class TrainActivationsConfig:
    every: int = 100  # training steps between measurements: one forward of one batch each
    unit: int = 0  # the unit (channel) of each tap; the YAML sets tracking.unit
    percentiles: list[float] = field(default_factory=lambda: [15.0, 50.0, 85.0])  # the YAML: tracking.percentiles

    def check(self) -> None:
        check(self.every > 0, "every", self.every, "a positive integer")
        check(len(self.percentiles) > 0 and all(0 <= p <= 100 for p in self.percentiles), "percentiles",
              list(self.percentiles), "a non-empty list of numbers in 0..100")


class TrainActivations(Probe):
    Config = TrainActivationsConfig

    def columns(self, model: Model) -> list[str]:
        return [f"train_act/{tap}/p{p:g}" for tap in model.tap_names for p in self.cfg.percentiles]

    def measure(self, view: ProbeView) -> dict[str, float]:
        taps = Replay(view).taps(self.cfg.unit)
        q = torch.tensor([p / 100 for p in self.cfg.percentiles])
        values = torch.stack([torch.quantile(t.float().cpu(), q) for t in taps])  # (taps, percentiles)
        return dict(zip(self.columns(view.model), values.flatten().tolist()))
