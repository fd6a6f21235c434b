"""The default init scale and learning rate, chosen by a written criterion from two selection sweeps that train
only the network without BN: reports/selection/report.md and numbers.json.

    python scripts/select_defaults.py multirun/select_init multirun/select_lr

Criterion (it never looks at a BN network's result):
1. init: the smallest model.init_std of the grid at which the network without BN leaves chance by its first
   evaluation (test accuracy above thresholds.STALL_ACC at step 500) on every seed at every candidate base
   learning rate; leaving chance within the first evaluation is what Figure 1(a) needs to compare speeds.
2. learning rate: at that init, full-length runs without BN at every candidate rate; the base rate is the
   network without BN's best by bnrepro.report.tuning's rule (the highest seed-mean final test accuracy among
   the rates at which no seed diverged or stalled; a tie goes to the smaller rate). The best rate stands even
   when others are inside its spread; those (rates at which every seed trained, and the 95% Welch interval of
   the difference in final accuracy contains 0) are listed: any of them would be as fair a baseline.

The sweeps (each 3 seeds, no BN, hydra/launcher=vectorized):
    bnrepro-train -m name=select_init model.bn=none model.init_std=0.05,0.1,0.2,0.3,0.5,1.0 \\
        optim.lr=0.1,0.2,0.5,1.0,2.0,5.0 seed=0,1,2 train.steps=1000 hydra.sweep.dir=multirun/select_init
    bnrepro-train -m name=select_lr model.bn=none model.init_std=<chosen> \\
        optim.lr=0.1,0.2,0.5,1.0,2.0,5.0,10.0 seed=0,1,2 train.steps=50000 hydra.sweep.dir=multirun/select_lr
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bnrepro.report import provenance  # noqa: E402
from bnrepro.report.load import load_runs  # noqa: E402
from bnrepro.report.markdown import cell, interval_cell, table  # noqa: E402
from bnrepro.report.outcomes import n_diverged, stalled  # noqa: E402
from bnrepro.report.slices import LR, matches  # noqa: E402
from bnrepro.report.stats import difference, evaluations, mean_interval  # noqa: E402
from bnrepro.report.thresholds import CONFIDENCE, STALL_ACC  # noqa: E402
from bnrepro.report.tuning import best_lr  # noqa: E402

INIT = "model.init_std"
FIRST_EVAL = 500


def first_eval(rs_metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: init, lr, seed and its test accuracy at the first evaluation after step 0."""
    acc = evaluations(rs_metrics)
    acc = acc[acc["step"] == FIRST_EVAL].set_index("run")["test_acc"]
    return pd.DataFrame({"init": runs[INIT].astype(float), "lr": runs[LR].astype(float), "seed": runs["seed"],
                         "acc": runs["run"].map(acc).astype(float)})


def choose_init(first: pd.DataFrame) -> tuple[float | None, pd.DataFrame]:
    """(the smallest init at which every seed at every rate leaves chance by FIRST_EVAL, the per-cell minima)."""
    lowest = first.pivot_table(index="init", columns="lr", values="acc", aggfunc="min")
    ok = (lowest > STALL_ACC).all(axis=1)
    return (float(ok[ok].index.min()) if ok.any() else None), lowest


def packaged_defaults() -> tuple[float, float]:
    conf = resources.files("bnrepro.conf")
    model = yaml.safe_load((conf / "model" / "mlp.yaml").read_text())
    optim = yaml.safe_load((conf / "optim" / "sgd.yaml").read_text())
    return float(model["init_std"]), float(optim["lr"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("init_sweep", type=Path)
    parser.add_argument("lr_sweep", type=Path)
    parser.add_argument("--out", type=Path, default=Path("reports/selection"))
    args = parser.parse_args(argv)

    init_rs, lr_rs = load_runs([args.init_sweep]), load_runs([args.lr_sweep])
    first = first_eval(init_rs.metrics, init_rs.finished)
    init, lowest = choose_init(first)
    init_table = lowest.map(cell).reset_index()
    init_table.columns = ["init_std", *[f"lr {c:g}" for c in lowest.columns]]
    init_table.insert(1, "leaves chance everywhere", ["yes" if (row > STALL_ACC).all() else "no"
                                                      for _, row in lowest.iterrows()])

    runs = lr_rs.finished
    inits = sorted(runs[INIT].astype(float).unique())
    found = best_lr(runs)
    lr = found[0] if found else None
    chosen = runs[matches(runs, LR, lr)] if lr is not None else runs.iloc[:0]
    rows, inside = [], []
    for rate in sorted(runs[LR].astype(float).unique()):
        at = runs[matches(runs, LR, rate)]
        final = at["final_test_acc"].dropna().astype(float)
        iv = difference(final.tolist(), chosen["final_test_acc"].astype(float).tolist()) if lr is not None else None
        if iv is not None and rate != lr and iv.side() == "inside" and any(r == rate for r, _ in found[1]):
            inside.append(rate)
        rows.append({"lr": f"{rate:g}", "n": len(at), "diverged": n_diverged(at), "stalled": int(stalled(at).sum()),
                     "final mean (%)": cell(final.mean()),
                     f"final {CONFIDENCE:.0%} CI (%)": interval_cell(mean_interval(final)),
                     "best mean (%)": cell(at["best_test_acc"].astype(float).mean()),
                     "vs chosen (points)": "chosen" if rate == lr else (iv.points() if iv is not None else "–")})
    lr_table = pd.DataFrame(rows)
    at_choice = first[(first["init"] == init) & (first["lr"] == lr)] if init is not None else first.iloc[:0]
    default_init, default_lr = packaged_defaults()
    match = init == default_init and lr == default_lr
    criterion = __doc__.split("Criterion", 1)[1].split("The sweeps", 1)[0].strip().removeprefix(
        "(it never looks at a BN network's result):").strip()
    commands = [*provenance.commands([], init_rs.sweeps), *provenance.commands([], lr_rs.sweeps),
                "# this report", "python scripts/select_defaults.py " + " ".join(map(str, [args.init_sweep,
                                                                                          args.lr_sweep]))]
    lines = [
        "# Choosing the default init scale and learning rate (no BN network is looked at)", "",
        f"- Chosen: model.init_std = {init:g}, optim.lr = {lr:g}" if init is not None and lr is not None else
        "- Chosen: nothing meets the criterion", "",
        f"- Packaged defaults (bnrepro/conf/model/mlp.yaml, bnrepro/conf/optim/sgd.yaml): init_std {default_init:g}, "
        f"lr {default_lr:g}: {'the chosen values' if match else 'NOT the chosen values'}", "",
        "## Criterion", "", criterion, "",
        f"## 1. Init scale: lowest test accuracy over seeds at step {FIRST_EVAL} (%), no BN", "",
        table(init_table), "",
        f"*Each cell: the lowest of the seeds' test accuracies after {FIRST_EVAL} steps, without BN, at that init "
        f"std and learning rate (chance is 10%; left chance = above thresholds.STALL_ACC, {STALL_ACC:.0%}).*", "",
        f"## 2. Learning rate: full-length runs without BN at init_std {', '.join(f'{v:g}' for v in inits)}", "",
        table(lr_table), "",
        f"*Final and best test accuracy after 50,000 steps, mean and {CONFIDENCE:.0%} Student t-interval over seeds; "
        f"last column: the {CONFIDENCE:.0%} Welch interval of (this rate - the chosen rate) in final accuracy.*", "",
        f"- Inside the chosen rate's spread (the interval contains 0): "
        f"{', '.join(f'{v:g}' for v in inside) or 'none'}: any of them would be as fair a baseline.",
        "- At the chosen init and rate the network without BN is at "
        f"{', '.join(cell(a) + '%' for a in at_choice['acc'])} after {FIRST_EVAL} steps "
        f"(seeds {', '.join(map(str, at_choice['seed']))}).", "",
        "## Reproduce", "", "```bash", *commands, "```", "",
        f"Git commit (from summary.json): {provenance.commits(pd.concat([init_rs.runs, lr_rs.runs]))}", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text("\n".join(lines))
    numbers = {"title": "selection", "init_std": init, "lr": lr, "defaults_match": match,
               "inside_spread": inside, "tables": {"init": init_table.to_dict("records"),
                                                   "lr": lr_table.to_dict("records")},
               "first_eval_at_choice": at_choice["acc"].tolist(), "commands": commands}
    (args.out / "numbers.json").write_text(json.dumps(numbers, indent=1) + "\n")
    print(f"select_defaults: init_std {init}, lr {lr}; wrote {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
