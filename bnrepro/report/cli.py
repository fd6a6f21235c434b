"""`bnrepro-report RUN_OR_SWEEP... [--out DIR] [--base-lr LR] [--seed N] [--formats png,pdf]`: figures and report.md
from run folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bnrepro.report.build import build_report
from bnrepro.report.draw import FORMATS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="bnrepro-report",
        description="Paper-style figures, tables and report.md from bnrepro-train run or sweep folders "
                    "(read from disk only: never W&B, never the network).")
    parser.add_argument("paths", nargs="+", type=Path,
                        help="run or sweep folders; searched recursively for folders holding summary.json")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: reports/<first sweep folder's name or experiment>)")
    parser.add_argument("--base-lr", type=float, default=None,
                        help="the learning rate called 1x (default: bnrepro.config.OptimConfig().lr if "
                             "the run set has it, else the most common optim.lr)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the seed whose networks Figure 1(b, c) draws, one network per panel (default 0; "
                             "the smallest seed present if that one is not)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"the figures' file formats, comma-separated (default {','.join(FORMATS)}; png alone "
                             "for a quicker look)")
    args = parser.parse_args(argv)
    formats = tuple(f for f in args.formats.split(",") if f)
    if not formats or any(f not in FORMATS for f in formats):
        print(f"bnrepro-report: invalid --formats={args.formats!r} (allowed: one or more of {', '.join(FORMATS)}, "
              "comma-separated)", file=sys.stderr)
        sys.exit(2)
    try:
        path = build_report(args.paths, args.out, args.base_lr, args.seed, formats)
    except FileNotFoundError as e:
        print(f"bnrepro-report: {e}", file=sys.stderr)
        sys.exit(1)
    except (FileExistsError, NotADirectoryError, PermissionError, IsADirectoryError) as e:  # --out unusable
        print(f"bnrepro-report: cannot write the report to {e.filename or args.out} ({e.strerror}): "
              "choose another --out folder", file=sys.stderr)
        sys.exit(3)
    print(f"bnrepro-report: wrote {path}")
