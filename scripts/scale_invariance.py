"""Sec. 3.3's scale invariance on trained networks: reports/scale_invariance/report.md, numbers.json and a figure.

    python scripts/scale_invariance.py                       # 3 seeds, measured at steps 0, 1000, 10000, 50000
    python scripts/scale_invariance.py --steps 0,500 --seeds 0 --out /tmp/scale

Run folders keep no weights, so bnrepro-report cannot test this claim; this script trains the paper's MLP with
and without BN at the default config's settings and measures it (bnrepro/report/scale_invariance.py).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bnrepro.data import default_root, load_mnist  # noqa: E402
from bnrepro.report import draw  # noqa: E402
from bnrepro.report import scale_invariance as si  # noqa: E402
from bnrepro.report.markdown import table  # noqa: E402
from bnrepro.run.runlog import git_commit, package_versions  # noqa: E402


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def render(rows: list[si.Deviation], settings: dict, args: argparse.Namespace, command: str, minutes: float) -> str:
    c = si.claim(rows)
    shown = si.table(rows)
    for q in (*si.QUANTITIES, "grad_ratio"):
        shown[q] = shown[q].map(si.fmt)
    shown["factor"] = shown["factor"].map(lambda a: f"{a:g}")
    shown = shown.rename(columns={"factor": "a", "output": "layer output", "input_grad": "dL/du",
                                  "weight_grad": "a dL/d(aW) vs dL/dW", "grad_ratio": "|dL/d(aW)| / |dL/dW|"})
    glance = pd.DataFrame([(c.where, f'"{c.quote}"', c.claim, c.found, c.verdict, "R1")],
                          columns=["paper", "the paper says (PAPER.md)", "tested here", "this run set", "verdict",
                                   "rule"])
    versions = package_versions()
    return "\n".join([
        "# Batch Normalization reproduction report: scale_invariance", "",
        f"- The paper's MLP (784 -> 3 x 100 sigmoid -> 10) with BN before each sigmoid and without BN, trained by "
        f"this script with plain SGD at the default config's settings (init N(0, {settings['init_std']:g}), lr "
        f"{settings['lr']:g}, batch {settings['batch_size']}), seeds {', '.join(map(str, args.seeds))}, measured "
        f"after {', '.join(map(str, args.steps))} steps",
        f"- Each measurement: the largest deviation over {args.batches} fixed training batches of "
        f"{settings['batch_size']} images, BN in training mode (batch statistics); the table's deviations are the "
        "largest over seeds, the gradient ratio their mean",
        f"- Wall time: {minutes:.1f} min", "",
        "## The paper's claims at a glance", "", table(glance), "",
        "Rules (thresholds in bnrepro/report/thresholds.py):", "", f"- R1: {c.rule}.", "",
        "## Tables", "", "### Relative change when one hidden layer's weight W becomes aW", "",
        "![gradient scale](scale_invariance.png)", "",
        "Files: [scale_invariance.png](scale_invariance.png), [scale_invariance.pdf](scale_invariance.pdf)", "",
        table(shown), "",
        "*Relative to a = 1: the layer's output (the input to its activation; with BN the BN output), the gradient "
        "of the loss w.r.t. the layer's input u, and a times the gradient w.r.t. the scaled weight against the "
        "gradient w.r.t. W, each as ||difference|| / ||value at a = 1||. Last column: the norm of the gradient "
        "w.r.t. aW over the one w.r.t. W; Sec. 3.3 says 1/a with BN. Step 0 is the untrained network.*", "",
        f"- {c.sentence()}", "",
        "## Reproduce", "", "```bash", command, "```", "",
        "Package versions:", "", table(pd.DataFrame(list(versions.items()), columns=["package", "version"])), "",
        f"Git commit: {git_commit() or 'not recorded'}", ""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--steps", type=_ints, default=[0, 1000, 10000, 50000],
                        help="comma-separated training steps to measure at (default 0,1000,10000,50000)")
    parser.add_argument("--batches", type=int, default=5, help="fixed training batches per measurement (default 5)")
    parser.add_argument("--out", type=Path, default=Path("reports/scale_invariance"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core, as every run; the other core stays free for a sweep
    start = time.time()
    data = load_mnist(default_root(), binarize=True, threshold=0.5)
    settings = si.default_settings()
    rows = si.run(data.train_x, data.train_y, args.seeds, args.steps, args.batches, settings=settings)
    args.out.mkdir(parents=True, exist_ok=True)
    draw.save(si.figure(rows), args.out, "scale_invariance")
    command = shlex.join(["python", "scripts/scale_invariance.py", *(argv if argv is not None else sys.argv[1:])])
    (args.out / "report.md").write_text(render(rows, settings, args, command, (time.time() - start) / 60))
    c = si.claim(rows)
    numbers = {"title": "scale_invariance", "settings": settings, "commands": [command], "commits": git_commit(),
               "claims": [vars(c)], "rows": [vars(r) for r in rows]}
    (args.out / "numbers.json").write_text(json.dumps(numbers, indent=1) + "\n")
    print(f"scale_invariance: {c.verdict}; wrote {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
