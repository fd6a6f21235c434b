"""bnrepro-report: paper-style figures and report.md from run folders (never W&B, never the network)."""
