"""Named experiments as real Hydra multiruns at smoke size: job folders, statuses, W&B runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

TINY = ("train.steps=60", "train.eval_every=30", "train.progress=false")


def _jobs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/summary.json"))


def _statuses(sweep: Path) -> list[str]:
    return [json.loads((j / "summary.json").read_text())["status"] for j in _jobs(sweep)]


def _check_wandb(job: Path, group: str, job_type: str) -> None:
    runs = list((job / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, job
    record = runs[0].read_bytes()  # protobuf records keep strings verbatim
    assert group.encode() in record and job_type.encode() in record


# experiment, extra overrides that keep the sweep small, expected job count, whether its W&B runs are checked
# (fig1's and lr_sweep's sweeps are test_golden's; smoke's W&B runs, both models with histograms, stand for all: a
# W&B run costs its process seconds)
CASES = [
    ("bn_placement", ("seed=0", "optim.lr=0.5", "model.activation=relu"), 3, False),
    ("activation_dist", ("seed=0",), 2, False),
    # both models on both data sets: the four (model, data) pairs of the experiment's 24 jobs, with BN
    ("smoke", ("model.bn=before", "optim.lr=0.1", "tracking.test_samples=1000"), 4, True),
]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.parametrize("experiment, extra, n_jobs, wandb", CASES, ids=[c[0] for c in CASES])
def test_experiment_sweep_writes_one_complete_folder_per_job(cli, tmp_path: Path, experiment: str,
                                                             extra: tuple[str, ...], n_jobs: int, wandb: bool) -> None:
    if experiment == "smoke" and not FASHION_MNIST.exists():
        pytest.skip("smoke runs Fashion-MNIST jobs: apt-get install dataset-fashion-mnist")
    sweep = tmp_path / experiment
    cli("-m", f"experiment={experiment}", *TINY, *extra, f"wandb.mode={'offline' if wandb else 'disabled'}",
        f"hydra.sweep.dir={sweep}", timeout=600)
    jobs = _jobs(sweep)
    assert len(jobs) == n_jobs == len([p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()])
    assert set(_statuses(sweep)) <= {"completed", "diverged"} and "completed" in _statuses(sweep)
    group = f"{sweep.parent.name}_{sweep.name}"
    for job in jobs:
        assert (job / "metrics.csv").exists() and (job / ".hydra" / "config.yaml").exists()
        if wandb:
            _check_wandb(job, group, experiment)
    # the job folder's name shows what the sweep varied
    assert all("seed=" in j.name or experiment == "smoke" for j in jobs)
    assert any("model.bn=before" in j.name for j in jobs)
    if experiment == "smoke":  # both models on both data sets, each named in its summary
        names = {(json.loads((j / "summary.json").read_text())["model_name"],
                  json.loads((j / "summary.json").read_text())["data_name"]) for j in jobs}
        assert names == {(m, d) for m in ("MLP", "CNN") for d in ("MNIST", "Fashion-MNIST")}


def test_joblib_runs_two_parallel_single_thread_jobs(cli, tmp_path: Path) -> None:
    sweep = tmp_path / "joblib"
    cli("-m", "experiment=fig1", "seed=0", *TINY, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "train.num_threads=null", "wandb.mode=disabled", f"hydra.sweep.dir={sweep}")
    summaries = [json.loads((j / "summary.json").read_text()) for j in _jobs(sweep)]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    # with num_threads=null the two jobs share the cores instead of oversubscribing them
    assert {s["torch_threads"] for s in summaries} == {max(1, (os.cpu_count() or 1) // 2)}


def test_submitit_local_runs_the_same_path(cli, tmp_path: Path) -> None:
    sweep = tmp_path / "submitit"
    cli("-m", "experiment=fig1", "seed=0", *TINY, "hydra/launcher=submitit_local", "wandb.mode=disabled",
        f"hydra.sweep.dir={sweep}")
    assert _statuses(sweep) == ["completed", "completed"]
    assert (sweep / ".submitit").is_dir()


def test_a_diverging_learning_rate_is_a_result_and_the_sweep_exits_zero(cli, tmp_path: Path) -> None:
    sweep = tmp_path / "diverge"
    proc = cli("-m", "model.bn=none,before", "optim.lr=1e6", *TINY, "wandb.mode=disabled",
               f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0
    summaries = {j.name: json.loads((j / "summary.json").read_text()) for j in _jobs(sweep)}
    none = next(s for name, s in summaries.items() if "model.bn=none" in name)
    assert none["status"] == "diverged" and none["diverged_step"] >= 1


def test_two_sweeps_started_together_get_two_folders(start_cli, tmp_path: Path) -> None:
    # default sweep folders (relative to the working directory), started in the same instant
    procs = [start_cli("-m", "experiment=fig1", "seed=0", *TINY, "wandb.mode=disabled", cwd=tmp_path)
             for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    sweeps = sorted({j.parent.parent for j in tmp_path.glob("multirun/*/*/*/summary.json")})
    assert len(sweeps) == 2 and all(len(_jobs(s)) == 2 for s in sweeps)
