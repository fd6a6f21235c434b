"""Gradients at initialisation against depth: model=deep_mlp's depth option, the step-1 grad_norms probe as the
gradient at the initial weights, and the report's init_gradients sections on a tiny run set trained in-process."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import read_metrics, validated
from omegaconf import OmegaConf

from bnrepro.data.mnist import MNIST
from bnrepro.models import DeepMLP
from bnrepro.parts import ConfigError, build_part
from bnrepro.report import claims
from bnrepro.report.build import build_report
from bnrepro.report.sections.init_gradients import Group, _bn_grows, _none_level
from bnrepro.run.job import Job, build_model, train
from bnrepro.training.batches import batch_order

TINY = ("experiment=init_gradients", "tracking.test_samples=20", "train.progress=false")


def test_depth_and_width_build_that_many_layers_and_the_mlp_they_spell() -> None:
    cfg = validated("model=deep_mlp", "model.depth=4", "model.width=7")
    torch.manual_seed(3)
    deep = build_model(cfg, MNIST)
    assert isinstance(deep, DeepMLP) and deep.tap_names == ["h1", "h2", "h3", "h4"]
    assert [tuple(h.linear.weight.shape) for h in deep.hidden] == [(7, 784), (7, 7), (7, 7), (7, 7)]
    assert tuple(deep.out.weight.shape) == (10, 7)
    # the same network as model=mlp with hidden=[7,7,7,7]: the same weights from the same seed
    torch.manual_seed(3)
    listed = build_model(validated("model.hidden=[7,7,7,7]"), MNIST)
    assert all(torch.equal(a, b) for a, b in zip(deep.state_dict().values(), listed.state_dict().values(), strict=True))


def test_model_mlp_keeps_its_schema_so_existing_runs_keep_their_digest() -> None:
    assert "depth" not in validated().model and list(validated().model.hidden) == [100, 100, 100]


@pytest.mark.parametrize(("overrides", "key"), [
    (("model=deep_mlp", "model.hidden=[100,100]"), "model.hidden"),  # a list beside depth and width contradicts them
    (("model=deep_mlp", "model.depth=0"), "model.depth"),
    (("model=deep_mlp", "model.width=-1"), "model.width"),
    (("+model.depth=5",), "model.depth"),  # model=mlp has no depth: its layers are model.hidden
])
def test_contradicting_or_bad_depth_settings_are_refused_in_one_line(overrides: tuple[str, ...], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        validated(*overrides)
    assert err.value.key == key and len(str(err.value).splitlines()) == 1


def _group(log_rates: list[float], depth: int = 6) -> Group:
    """Runs whose log norms fall by exactly log_rate per layer from the first to the last."""
    norms = np.array([[math.exp(-r * i) for i in range(depth)] for r in log_rates])
    return Group(norms, list(log_rates), [r * (depth - 1) for r in log_rates])


def test_the_verdict_rules_on_known_rates() -> None:
    grows, level = [0.2, 0.21, 0.19], [0.001, -0.002, 0.0005]
    by = {("relu", "before", 3): _group(grows, 3), ("relu", "before", 6): _group(grows, 6),
          ("relu", "none", 3): _group(level, 3), ("relu", "none", 6): _group(level, 6),
          ("tanh", "before", 3): _group(level, 3), ("tanh", "before", 6): _group(level, 6),
          ("tanh", "none", 3): _group(grows, 3), ("tanh", "none", 6): _group([-g for g in grows], 6)}
    assert _bn_grows("relu", by).verdict == claims.REPRODUCED
    assert _none_level("relu", by).verdict == claims.REPRODUCED
    # level with BN: no growth, and a ratio that does not grow with depth
    assert _bn_grows("tanh", by).verdict in (claims.NOT_REPRODUCED, claims.INCONCLUSIVE)
    tanh_none = _none_level("tanh", by)
    assert tanh_none.verdict == claims.NOT_REPRODUCED
    assert "(grows" in tanh_none.found and "(vanishes" in tanh_none.found
    assert _bn_grows("sigmoid", by).verdict == claims.UNTESTABLE


@pytest.fixture(scope="module")
def tiny_sweep(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Depths 3 and 6, BN and none, tanh and ReLU, 2 seeds: 16 runs trained in-process, 2 seeds a stack, each
    folder named <activation>_<bn>_<depth>_<seed>. One composed config, changed along the sweep's axes (each value
    one that validate accepts), saves a Hydra compose per run."""
    sweep = tmp_path_factory.mktemp("init_gradients")
    base = validated(*TINY, f"data.root={data_root}")
    for act in ("tanh", "relu"):
        for bn in ("none", "before"):
            for depth in (3, 6):
                jobs = []
                for seed in (0, 1):
                    run_dir = sweep / f"{act}_{bn}_{depth}_{seed}"
                    run_dir.mkdir()
                    cfg = OmegaConf.merge(base, {"seed": seed, "model": {"activation": act, "bn": bn, "depth": depth}})
                    jobs.append(Job(cfg=cfg, run_dir=run_dir, device=torch.device("cpu"), wandb_mode="disabled",
                                    wandb_group=None, threads=1, prior=None, progress=False))
                train(jobs)
                for job in jobs:  # the config the CLI records (bnrepro.run.checkpoint.record_hydra_files)
                    (job.run_dir / ".hydra").mkdir()
                    (job.run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(job.cfg))
    return sweep


def test_the_step_1_probe_row_is_autograds_gradient_at_the_initial_weights(tiny_sweep: Path) -> None:
    run_dir = tiny_sweep / "relu_before_6_1"  # trained in a stack of two
    (row,) = [r for r in read_metrics(run_dir) if r["step"] == "1"]
    cfg = OmegaConf.create(yaml_text := (run_dir / ".hydra" / "config.yaml").read_text())
    assert "depth: 6" in yaml_text
    # the oracle: the initial weights (the seed, then the constructor) on the first batch of the run's order
    data = build_part(cfg.data, "data").load(torch.device("cpu"))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, MNIST)
    idx = batch_order("epoch", data.train_x.shape[0], cfg.train.batch_size, cfg.seed, torch.device("cpu")).batch(1)
    x = model.prepare_inputs(data.train_x.index_select(0, idx), evaluation=False)
    F.cross_entropy(model(x), data.train_y.index_select(0, idx)).backward()
    weights = {**{f"h{i + 1}": h.linear.weight for i, h in enumerate(model.hidden)}, "out": model.out.weight}
    assert {n: float(row[f"grad_norm/weight/{n}"]) for n in weights} == pytest.approx(
        {n: w.grad.norm().item() for n, w in weights.items()}, rel=1e-6)


def test_the_report_of_a_depth_study_is_its_sections_alone(tiny_sweep: Path, tmp_path: Path) -> None:
    md = build_report([tiny_sweep], tmp_path, formats=("png",)).read_text()
    assert (tmp_path / "init_gradients_layers.png").exists() and (tmp_path / "init_gradients_growth.png").exists()
    assert "Figure 1(a)" not in md and "The training sections" in md  # one step per run: nothing trained
    numbers = json.loads((tmp_path / "numbers.json").read_text())
    found = {c["claim"]: c for c in numbers["claims"]}
    assert len(found) == 4 and all(c["verdict"] in claims.VERDICTS for c in found.values())
    # every table row's growth rate is the runs' own: a least-squares slope of log norm by layer, by hand
    (table,) = numbers["tables"].values()
    assert len(table) == 8
    for row in table:
        act, bn = row["activation"], {"no BN": "none", "BN": "before"}[row["network"]]
        logs = []
        for seed in (0, 1):
            (probe,) = [r for r in read_metrics(tiny_sweep / f"{act}_{bn}_{row['depth']}_{seed}") if r["step"] == "1"]
            y = np.log([float(probe[f"grad_norm/weight/h{i}"]) for i in range(1, row["depth"] + 1)])
            x = np.arange(len(y)) - (len(y) - 1) / 2
            logs.append(-(x * (y - y.mean())).sum() / (x * x).sum())
        assert float(row["growth rate per layer (mean)"]) == pytest.approx(math.exp(np.mean(logs)), abs=6e-4)
