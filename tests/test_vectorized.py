"""Vectorized sweeps: K stacked models against the same models trained alone, bit for bit, and the launcher
as a user runs it (a real Hydra multirun) against the basic launcher."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from bnrepro.config import register_configs, validate
from bnrepro.launch.vectorized import plan
from bnrepro.models import MLP, StackedMLP
from bnrepro.models import mlp as model_module
from bnrepro.nn import cpu_kernel
from bnrepro.run.checkpoint import CHECKPOINT_FILE
from bnrepro.run.job import Job
from bnrepro.training.optim import StackedSGD

REPO = Path(__file__).resolve().parent.parent
LRS = [0.1, 0.5, 3.0]


def _models(k: int, **model_cfg) -> list[MLP]:
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(MLP(**model_cfg))
    return models


def _batch(k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(k, 60, 784, generator=g) > 0.87).float()  # binary, as the paper's input
    return x, torch.randint(0, 10, (k, 60), generator=g)


@pytest.fixture(params=["cpp_step", "torch_ops"])
def step_path(request, monkeypatch) -> str:
    """StackedMLP.train_step's two paths: stacked_cpu.cpp's one call, and torch ops with autograd (CUDA's)."""
    if request.param == "cpp_step":
        assert model_module.step_kernel() is not None, "stacked_cpu.cpp did not build"
    monkeypatch.setattr(cpu_kernel, "enabled", request.param == "cpp_step")
    return request.param


@pytest.mark.parametrize("bn_momentum", [0.1, None])
@pytest.mark.parametrize("bn", ["none", "before", "after"])
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
def test_stacked_training_steps_equal_each_model_trained_alone(bn: str, activation: str,
                                                               bn_momentum: float | None, step_path: str) -> None:
    torch.set_num_threads(1)
    # init 0.05: relu without BN at lr 3 stays finite over these steps (at the default 0.2 it overflows to NaN)
    cfg = {"bn": bn, "activation": activation, "bn_momentum": bn_momentum, "init_std": 0.05}
    alone = _models(3, **cfg)
    stacked = StackedMLP(_models(3, **cfg))
    optimizers = [torch.optim.SGD(m.parameters(), lr=lr) for m, lr in zip(alone, LRS)]
    stacked_sgd = StackedSGD(stacked.params, LRS, momentum=0.0)
    for step in range(3):
        x, y = _batch(3, step)
        # the K batches as rows of one training set, each model's taken by index as the loop does
        idx = torch.randperm(180, generator=torch.Generator().manual_seed(step))
        train_x, train_y = torch.empty(180, 784), torch.empty(180, dtype=torch.long)
        train_x[idx], train_y[idx] = x.reshape(180, 784), y.reshape(180)
        losses = stacked.train_step(train_x, train_y, idx, [True] * 3, max_loss=1e3)
        stacked_sgd.step()
        for k, (model, opt) in enumerate(zip(alone, optimizers)):
            loss = F.cross_entropy(model(x[k]), y[k])
            assert loss.item() == losses[k]
            opt.zero_grad()
            loss.backward()
            opt.step()
    test_x = _batch(1, 99)[0][0].repeat(40, 1)  # (2400, 784): several vector widths and a tail
    stacked.eval()
    acts: list[torch.Tensor] = []
    with torch.no_grad():
        logits = stacked(test_x, acts, unit=2)
        for k, model in enumerate(alone):
            assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                         stacked.export(k, MLP(**cfg))
                                                         .state_dict().values()))
            model_acts: list[torch.Tensor] = []
            assert torch.equal(model.eval()(test_x, model_acts, unit=2), logits[k])
            assert all(torch.equal(a, b[k]) for a, b in zip(model_acts, acts))


@pytest.mark.parametrize("bn", ["none", "before"])
def test_a_step_gives_gradients_only_to_active_models_within_the_loss_bound(bn: str, step_path: str) -> None:
    torch.set_num_threads(1)
    stacked, alone = StackedMLP(_models(3, bn=bn)), _models(3, bn=bn)
    x, y = _batch(3, 0)
    losses = [F.cross_entropy(m(xk), yk) for m, xk, yk in zip(alone, x, y)]
    # model 1 is no longer active; of models 0 and 2, the one with the lower loss is within the bound
    within, past = sorted((0, 2), key=lambda k: losses[k].item())
    max_loss = (losses[0].item() + losses[2].item()) / 2
    assert losses[within].item() < max_loss < losses[past].item()
    values = stacked.train_step(x.reshape(180, 784), y.reshape(180), torch.arange(180), [True, False, True], max_loss)
    assert values == [loss.item() for loss in losses]
    losses[within].backward()
    for name, param in alone[within].named_parameters():
        grad = stacked.tensors[name].grad
        assert torch.equal(grad[within].reshape(param.shape), param.grad), name
        assert not grad[[k for k in range(3) if k != within]].any(), name
    stacked.train_step(x.reshape(180, 784), y.reshape(180), torch.arange(180), [False, True, False], max_loss=-1.0)
    assert all(p.grad is not None for p in stacked.params)  # no model within the bound: no backward at all


def _job(tmp_path: Path, *overrides: str) -> Job:
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = validate(compose("config", overrides=list(overrides)))
    run_dir = tmp_path / "_".join(overrides)
    return Job(cfg=cfg, run_dir=run_dir, device=torch.device("cpu"), wandb_mode="disabled", wandb_group=None,
               threads=1, prior=None)


def test_plan_stacks_only_jobs_that_differ_in_per_model_settings(tmp_path: Path) -> None:
    seeds = [_job(tmp_path, f"seed={s}", f"optim.lr={lr}") for s in range(3) for lr in (0.1, 0.5)]
    other_arch = [_job(tmp_path, "model.bn=before", f"seed={s}") for s in range(2)]
    torch_bn = [_job(tmp_path, "model.bn=before", "model.bn_impl=torch", f"seed={s}") for s in range(2)]
    longer = [_job(tmp_path, "train.steps=100")]
    groups = plan(seeds + other_arch + torch_bn + longer, max_models=64, n_workers=1)
    members = sorted(sorted(id(j) for j in g) for g in groups)
    expected = [seeds, other_arch, *[[j] for j in torch_bn], longer]
    assert members == sorted(sorted(id(j) for j in g) for g in expected)
    # a cap on the group size, and halving so that every worker gets a group
    assert sorted(len(g) for g in plan(seeds, max_models=4, n_workers=1)) == [2, 4]
    assert sorted(len(g) for g in plan(seeds, max_models=64, n_workers=2)) == [3, 3]
    assert sorted(len(g) for g in plan(seeds, max_models=64, n_workers=4)) == [1, 1, 2, 2]


def _summaries(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


def test_vectorized_sweep_writes_the_runs_of_the_basic_launcher_bit_for_bit(cli, tmp_path: Path) -> None:
    # BN and no BN, a diverging rate beside a training one in the same stack; 1,100 steps cross an epoch, and the
    # golden files check fig1 and lr_sweep's stacks (tests/test_golden.py)
    sweep = ("-m", "model.bn=none,before", "optim.lr=0.1,1e6", "seed=0", "train.steps=1100",
             "train.eval_every=500", "train.progress=false")
    basic, vectorized = tmp_path / "basic", tmp_path / "vectorized"
    cli(*sweep, "wandb.mode=disabled", f"hydra.sweep.dir={basic}", timeout=600)
    cli(*sweep, "hydra/launcher=vectorized", "hydra.launcher.n_jobs=2", "wandb.mode=offline",
        f"hydra.sweep.dir={vectorized}", timeout=600)
    expected, got = _summaries(basic), _summaries(vectorized)
    assert sorted(got) == sorted(expected) and len(got) == 4
    for name, summary in got.items():
        assert summary["vectorized"] == {"models": 2}
        for key in ("status", "steps_done", "diverged_step", "final_test_acc", "best_test_acc", "best_step"):
            assert summary[key] == expected[name][key], (name, key)
        assert (vectorized / name / "metrics.csv").read_bytes() == (basic / name / "metrics.csv").read_bytes()
        assert len(list((vectorized / name / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
        assert (vectorized / name / ".hydra" / "config.yaml").exists()
    statuses = {s["status"] for s in got.values()}
    assert statuses == {"completed", "diverged"}


def test_sigterm_stops_every_worker_and_the_same_command_finishes_the_sweep(cli, start_cli, tmp_path: Path) -> None:
    args = ("-m", "model.bn=none,before", "seed=0,1", "train.steps=1000", "train.eval_every=250",
            "train.checkpoint_every=200", "train.progress=false", "wandb.mode=disabled", "hydra/launcher=vectorized")
    # the uninterrupted sweep, its stacks in the launcher's own process (that the vectorized launcher writes the
    # basic launcher's runs is the test above's)
    uninterrupted = tmp_path / "uninterrupted"
    cli(*args, "hydra.launcher.n_jobs=1", f"hydra.sweep.dir={uninterrupted}")
    sweep = tmp_path / "vectorized"
    vectorized = (*args, "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}")
    proc = start_cli(*vectorized)  # two worker processes, each a stack of two models
    deadline = time.monotonic() + 120
    while len(list(sweep.glob(f"*/{CHECKPOINT_FILE}"))) < 4:
        assert time.monotonic() < deadline and proc.poll() is None, "the stacks never checkpointed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to the launcher only: it passes the signal on to its workers
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    stopped = _summaries(sweep)
    assert len(stopped) == 4 and {s["status"] for s in stopped.values()} == {"interrupted"}
    for name, summary in stopped.items():
        checkpoint = torch.load(sweep / name / CHECKPOINT_FILE, weights_only=True)
        assert checkpoint["loop"]["step"] == summary["steps_done"] > 0

    cli(*vectorized)
    finished = _summaries(sweep)
    assert {s["status"] for s in finished.values()} == {"completed"}
    for name, summary in finished.items():
        assert summary["resumed_from_step"] == stopped[name]["steps_done"]
        assert (sweep / name / "metrics.csv").read_bytes() == (uninterrupted / name / "metrics.csv").read_bytes()
