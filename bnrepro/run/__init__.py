"""One run (or a group of stacked runs) from validated configs: its folder, checkpoints and W&B run."""
