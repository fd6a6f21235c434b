"""Probes: per-step measurements declared in config, written to metrics.csv, never changing the trajectory."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bnrepro.models import MLP
from bnrepro.probes import ProbeView
from bnrepro.probes.grad_norms import WeightGradNorms

SHORT = ("train.steps=300", "train.eval_every=100", "train.progress=false", "wandb.mode=disabled")
PROBE = ("probes=[grad_norms]", "probes.grad_norms.every=40")
# the probes that recompute the step at other weights (tests/test_ics_landscape.py), at steps of their own
REPLAYS = ("probes=[grad_norms,ics,landscape,train_acts]", "probes.ics.every=60", "probes.landscape.every=75",
           "probes.landscape.points=3", "probes.train_acts.every=100")


def read(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_same_training(plain: Path, probed: Path) -> list[dict[str, str]]:
    """The probed run's evaluation rows, restricted to the plain run's columns, are the plain run's, as text;
    returns the probed run's rows."""
    rows, probed_rows = read(plain / "metrics.csv"), read(probed / "metrics.csv")
    evaluated = [r for r in probed_rows if r["test_acc"] != ""]
    assert [{k: r[k] for k in rows[0]} for r in evaluated] == rows
    return probed_rows


@pytest.fixture(scope="module")
def plain(cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs without a probe (seeds 0 and 1), as a sweep of the basic launcher."""
    sweep = tmp_path_factory.mktemp("probes") / "plain"
    cli("-m", "seed=0,1", "model.bn=before", *SHORT, f"hydra.sweep.dir={sweep}")
    return sweep


def test_a_probe_adds_columns_and_rows_and_leaves_the_metrics_bit_for_bit(cli, plain: Path, tmp_path: Path) -> None:
    """ics, landscape and train_acts too: they move weights, BN statistics and the RNG on copies only."""
    cli("model.bn=before", "seed=0", *SHORT, *PROBE[1:], *REPLAYS, f"hydra.run.dir={tmp_path / 'probed'}")
    (seed0,) = plain.glob("*seed=0*")
    rows = assert_same_training(seed0, tmp_path / "probed")
    layers = ("h1", "h2", "h3", "out")
    columns = [f"grad_norm/weight/{layer}" for layer in layers]
    ics = [f"ics/{m}/{layer}" for m in ("l2", "cos") for layer in layers]
    landscape = [f"landscape/{c}" for c in ("loss/min", "loss/max", "grad_change/min", "grad_change/max", "beta")]
    train_acts = [f"train_act/{tap}/p{p}" for tap in layers[:3] for p in (15, 50, 85)]  # tracking.percentiles
    assert list(rows[0])[-26:] == columns + ics + landscape + train_acts
    for probed, every in ((columns, 40), (ics, 60), (landscape, 75), (train_acts, 100)):
        measured = [r for r in rows if r[probed[0]] != ""]
        assert [int(r["step"]) for r in measured] == list(range(every, 301, every))
        assert all(math.isfinite(float(r[c])) for r in measured for c in probed)
    assert all(float(r[c]) > 0 for r in rows if r[columns[0]] != "" for c in columns)
    # a probe-only step is a row of its own: no evaluation there
    assert all(r["test_acc"] == "" for r in rows if r[columns[0]] != "" and int(r["step"]) % 100)


def test_a_probe_inside_a_stack_leaves_every_model_as_alone(cli, plain: Path, tmp_path: Path) -> None:
    cli("-m", "seed=0,1", "model.bn=before", *SHORT, *PROBE, "hydra/launcher=vectorized", "hydra.launcher.n_jobs=1",
        f"hydra.sweep.dir={tmp_path / 'stk'}")
    alone = sorted(plain.glob("*/metrics.csv"))
    stacked = sorted((tmp_path / "stk").glob("*/metrics.csv"))
    assert len(alone) == len(stacked) == 2
    for a, b in zip(alone, stacked):
        assert_same_training(a.parent, b.parent)


def test_weight_grad_norms_are_the_gradients_norms() -> None:
    torch.manual_seed(0)
    model = MLP(bn="before", hidden=[20, 10])
    x, y = torch.rand(32, 784), torch.randint(0, 10, (32,))
    probe = WeightGradNorms(every=1)
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(math.isnan(v) for v in probe.measure(ProbeView(0, model, grads, stacked=False)).values())
    F.cross_entropy(model(x), y).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    values = probe.measure(ProbeView(1, model, grads, stacked=False))
    assert list(values) == probe.columns(model) == ["grad_norm/weight/h1", "grad_norm/weight/h2",
                                                     "grad_norm/weight/out"]
    expected = [model.hidden[0].linear.weight, model.hidden[1].linear.weight, model.out.weight]
    assert list(values.values()) == pytest.approx([w.grad.norm().item() for w in expected], rel=1e-6)


def test_a_bad_probe_setting_is_one_line(cli, tmp_path: Path) -> None:
    proc = cli(*PROBE[:1], "probes.grad_norms.every=0", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 2 and "probes.grad_norms.every=0" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
