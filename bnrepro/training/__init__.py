"""The training loop, written once for one model and for K stacked ones, and what it drives and measures."""
