"""scripts/select_defaults.py: the default init and learning rate follow from the selection sweeps by the written
criterion, recomputed here from the runs' own files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
# stacked in one process (the launcher writes the basic launcher's runs: test_vectorized): the fastest way to the runs
SHORT = ("model.bn=none", "seed=0,1", "train.steps=500", "train.eval_every=500", "train.progress=false",
         "wandb.mode=disabled", "hydra/launcher=vectorized", "hydra.launcher.n_jobs=1")


def _script():
    spec = importlib.util.spec_from_file_location("select_defaults", REPO / "scripts" / "select_defaults.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runs(sweep: Path) -> pd.DataFrame:
    rows = []
    for summary in sweep.rglob("summary.json"):
        cfg = yaml.safe_load((summary.parent / ".hydra" / "config.yaml").read_text())
        metrics = pd.read_csv(summary.parent / "metrics.csv").set_index("step")["test_acc"]
        rows.append({"init": cfg["model"]["init_std"], "lr": cfg["optim"]["lr"], "at500": metrics[500],
                     **json.loads(summary.read_text())})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def chosen(cli, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("select")
    cli("-m", *SHORT, "model.init_std=0.01,0.2", "optim.lr=0.5,2.0", f"hydra.sweep.dir={root / 'init'}")
    cli("-m", *SHORT, "model.init_std=0.2", "optim.lr=0.5,2.0", f"hydra.sweep.dir={root / 'lr'}")
    _script().main([str(root / "init"), str(root / "lr"), "--out", str(root / "out")])
    return root / "init", root / "lr", root / "out"


def test_the_smallest_init_that_leaves_chance_everywhere_and_the_best_rate_are_chosen(chosen) -> None:
    init_sweep, lr_sweep, out = chosen
    first = _runs(init_sweep)
    leaves = first.groupby("init")["at500"].min() > 0.2  # every seed at every rate above thresholds.STALL_ACC
    assert leaves.any()
    runs = _runs(lr_sweep)
    means = runs[runs["best_test_acc"] >= 0.2].groupby("lr")["final_test_acc"].mean()
    numbers = json.loads((out / "numbers.json").read_text())
    assert numbers["init_std"] == leaves[leaves].index.min()
    assert numbers["lr"] == means.idxmax()
    md = (out / "report.md").read_text()
    assert f"- Chosen: model.init_std = {numbers['init_std']:g}, optim.lr = {numbers['lr']:g}" in md
    lowest = {(r["init_std"], lr): v for r in numbers["tables"]["init"] for lr, v in r.items() if lr.startswith("lr ")}
    for (init, lr), group in first.groupby(["init", "lr"]):
        assert lowest[(init, f"lr {lr:g}")] == f"{100 * group['at500'].min():.2f}"
