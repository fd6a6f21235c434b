"""W&B never costs a run: an unreachable server in online mode, and W&B errors while logging."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import torch

from bnrepro.run.wandb_run import WandbRun

SHORT = ("train.steps=100", "train.eval_every=50", "train.progress=false", "wandb.mode=online")
# a closed local port: the connection is refused at once, as with no network at all, and nothing leaves
NO_SERVER = {"WANDB_BASE_URL": "http://127.0.0.1:9"}


def test_online_without_server_falls_back_to_offline_fast(cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "fallback"
    start = time.monotonic()
    proc = cli(*SHORT, f"hydra.run.dir={run_dir}", env=NO_SERVER)
    assert time.monotonic() - start < 60  # wandb's own online init would wait ~90 s first
    assert "unreachable" in proc.stdout + proc.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def test_online_without_server_and_no_fallback_stops_before_training(cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "nofallback"
    proc = cli(*SHORT, "wandb.offline_fallback=false", f"hydra.run.dir={run_dir}", env=NO_SERVER, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "127.0.0.1:9" in lines[0] and "offline_fallback" in lines[0]
    assert not (run_dir / "summary.json").exists()


def test_wandb_error_while_logging_is_reported_once_and_training_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wb = WandbRun(mode="offline", project="bnrepro-test", entity=None, group=None, job_type=None, tags=[],
                  name="t", config={}, run_dir=tmp_path, run_id="abc12345", resume=False)
    wb.run.finish()  # W&B now raises UsageError on every call to log
    with caplog.at_level(logging.WARNING, logger="bnrepro.wandb_run"):
        for step in range(3):
            wb.log(step, {"step": step, "test_acc": 0.5}, {"h1": torch.zeros(4)})
        wb.finish({"status": "completed"}, exit_code=0)
    ours = [r.getMessage() for r in caplog.records if r.name == "bnrepro.wandb_run"]
    assert len(ours) == 1 and "W&B log failed" in ours[0]
