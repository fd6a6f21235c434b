"""Interruption and resume through the real CLI: kill -9, SIGTERM, re-run sweeps, folders that refuse."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import in_process_job

from bnrepro.atomic import atomic_write_text
from bnrepro.interrupt import Interrupted
from bnrepro.run import record as record_module
from bnrepro.run.checkpoint import CHECKPOINT_FILE
from bnrepro.run.job import train
from bnrepro.run.lock import LOCK_FILE

# long enough that a kill lands mid-run, short enough for the suite; checkpoints every 200 steps
RUN = ("model.bn=before", "train.steps=1500", "train.eval_every=250", "train.checkpoint_every=200",
       "train.progress=false", "wandb.mode=offline")


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("resume") / "uninterrupted"
    cli(*RUN, "wandb.mode=disabled", f"hydra.run.dir={run_dir}")  # W&B is compute-neutral: the same metrics
    return run_dir


def test_kill_9_then_resume_is_bit_identical(cli, start_cli, uninterrupted: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    proc = start_cli(*RUN, f"hydra.run.dir={run_dir}")
    _wait_for(run_dir / CHECKPOINT_FILE)
    time.sleep(random.uniform(0.0, 1.0))  # a random step past the first checkpoint
    proc.kill()
    proc.wait()
    assert _summary(run_dir)["status"] == "running"  # killed mid-run: nothing had a chance to clean up
    assert (run_dir / LOCK_FILE).read_text().strip() == str(proc.pid)  # its lock file stays, its lock does not

    proc = cli(*RUN, f"hydra.run.dir={run_dir}")
    summary = _summary(run_dir)
    assert summary["status"] == "completed" and summary["resumed_from_step"] >= 200
    assert (run_dir / "metrics.csv").read_text() == (uninterrupted / "metrics.csv").read_text()
    assert summary["final_test_acc"] == _summary(uninterrupted)["final_test_acc"]
    assert not (run_dir / CHECKPOINT_FILE).exists()  # a finished run keeps its results, not its checkpoint
    # the resumed segment continues the same W&B run id
    assert {p.name.rsplit("-", 1)[1] for p in (run_dir / "wandb").glob("offline-run-*")} == {summary["wandb_id"]}


def test_sigterm_checkpoints_marks_interrupted_and_resumes(cli, start_cli, uninterrupted: Path,
                                                          tmp_path: Path) -> None:
    run_dir = tmp_path / "terminated"
    proc = start_cli(*RUN, "train.checkpoint_every=0", f"hydra.run.dir={run_dir}")
    _wait_for(run_dir / "metrics.csv")  # training has started
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert f"hydra.run.dir={run_dir}" in stderr  # the message says how to continue
    summary = _summary(run_dir)
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM"
    checkpoint = torch.load(run_dir / CHECKPOINT_FILE, weights_only=True)
    assert checkpoint["loop"]["step"] == summary["steps_done"]
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # the W&B run was finished, not lost

    cli(*RUN, f"hydra.run.dir={run_dir}")
    assert (run_dir / "metrics.csv").read_text() == (uninterrupted / "metrics.csv").read_text()


def test_finished_run_is_skipped_not_retrained(cli, uninterrupted: Path) -> None:
    before = (uninterrupted / "summary.json").read_text()
    proc = cli(*RUN, f"hydra.run.dir={uninterrupted}")
    assert "skipped" in proc.stdout and (uninterrupted / "summary.json").read_text() == before


@pytest.mark.parametrize("override, why", [("optim.lr=0.2", "another config"), ("train.resume=false", "resume")])
def test_folder_holding_a_run_refuses_other_work_and_keeps_its_files(cli, uninterrupted: Path, override: str,
                                                                     why: str) -> None:
    files = {p: p.read_bytes() for p in uninterrupted.rglob("*") if p.is_file() and "wandb" not in p.parts}
    proc = cli(*RUN, override, f"hydra.run.dir={uninterrupted}", check=False)
    assert proc.returncode == 2 and why in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in files} == files  # Hydra's .hydra/ files are put back too


def test_rerun_of_a_partly_finished_sweep_runs_only_what_is_missing(cli, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    tiny = ("train.steps=60", "train.eval_every=30", "train.progress=false", "wandb.mode=disabled",
            f"hydra.sweep.dir={sweep}")
    cli("-m", "seed=0,1", *tiny)
    done = {p: p.read_text() for p in sweep.glob("*/summary.json")}
    assert len(done) == 2
    proc = cli("-m", "seed=0,1,2", *tiny)
    assert proc.stdout.count("skipped") == 2
    assert {p: p.read_text() for p in done} == done
    assert [_summary(j)["status"] for j in sweep.glob("2_seed=2,*")] == ["completed"]


def test_sigterm_stops_a_sweep_and_a_rerun_finishes_it(cli, start_cli, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ("-m", "seed=0,1,2", *RUN, "wandb.mode=disabled", f"hydra.sweep.dir={sweep}")
    proc = start_cli(*args)
    deadline = time.monotonic() + 120
    while not list(sweep.glob(f"1_*/{CHECKPOINT_FILE}")):  # the second job is training
        assert time.monotonic() < deadline and proc.poll() is None, "the second job never checkpointed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0  # the sweep stopped, as Ctrl-C would stop it
    assert [_summary(j)["status"] for j in sorted(sweep.glob("[01]_*"))] == ["completed", "interrupted"]
    assert not list(sweep.glob("2_*"))

    out = cli(*args).stdout
    assert out.count("skipped") == 1
    jobs = sorted(sweep.glob("[012]_*"))
    assert [_summary(j)["status"] for j in jobs] == ["completed"] * 3
    assert _summary(jobs[1])["resumed_from_step"] > 0


def test_a_signal_right_after_a_checkpoint_replaced_the_last_records_the_new_ones_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second signal may land after a checkpoint's rename, before the run's bookkeeping knows of it: the summary's
    steps_done must still be the step a resume continues from, the one in the file."""
    real_save = record_module.save_checkpoint

    def save_then_signal(run_dir: Path, *args, **kwargs) -> None:
        real_save(run_dir, *args, **kwargs)
        if args[2].step >= 40:  # the second periodic checkpoint is on disk: the signal's exception lands now
            raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(record_module, "save_checkpoint", save_then_signal)
    job = in_process_job(tmp_path / "run", "model.bn=before", "train.steps=100", "train.eval_every=50",
                         "train.checkpoint_every=20")
    with pytest.raises(Interrupted):
        train([job])
    summary = _summary(job.run_dir)
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM"
    assert summary["steps_done"] == torch.load(job.run_dir / CHECKPOINT_FILE)["loop"]["step"] == 40


def test_a_signal_right_after_the_temporary_file_is_created_leaves_no_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """atomic_write's temporary file is removed whatever instant a signal's exception comes, even before the
    file descriptor is bound to a name."""
    target = tmp_path / "summary.json"
    target.write_text("old")
    real_open = os.open

    def open_then_signal(path, *args, **kwargs) -> int:
        real_open(path, *args, **kwargs)
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(os, "open", open_then_signal)
    with pytest.raises(Interrupted):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"] and target.read_text() == "old"
