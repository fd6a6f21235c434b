"""Probes: measurements taken every k training steps, each a part named by `conf/probes/<name>.yaml`."""

from bnrepro.probes.base import Probe, ProbeView, norms_of

__all__ = ["Probe", "ProbeView", "norms_of"]
