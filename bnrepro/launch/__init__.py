"""Launching sweeps: how their jobs run, and how their progress shows."""
