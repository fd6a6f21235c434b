"""W&B never costs a run: an unreachable server in online mode, and W&B errors while logging."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    with caplog.at_level(logging.WARNING, logger="bnrepro.run.wandb_run"):
        for step in range(3):
            wb.log(step, {"step": step, "test_acc": 0.5}, {"h1": torch.zeros(4)})
        wb.finish({"status": "completed"}, exit_code=0)
    ours = [r.getMessage() for r in caplog.records if r.name == "bnrepro.run.wandb_run"]
    assert len(ours) == 1 and "W&B log failed" in ours[0]


@contextmanager
def _server(answer_probe: bool) -> Iterator[dict[str, str]]:
    """A local W&B server stand-in that accepts every connection and never answers, or (answer_probe) answers
    HEAD/GET at once but never a POST (W&B's API calls): a server, or a proxy, that has stopped responding."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        request = b""
        while answer_probe and b"\r\n\r\n" not in request and (chunk := conn.recv(4096)):
            request += chunk
        if answer_probe and request.startswith((b"HEAD", b"GET")):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            conn.close()
        else:
            held.append(conn)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        # a made-up key: W&B asks for one before it contacts the server at all
        yield {"WANDB_BASE_URL": f"http://127.0.0.1:{listener.getsockname()[1]}", "WANDB_API_KEY": "0" * 40}
    finally:
        listener.close()
        for conn in held:
            conn.close()


DEADLINE = "wandb.connect_timeout_s=1"  # the server never answers in time: any deadline is missed


@pytest.mark.parametrize("answer_probe", [False, True], ids=["silent_server", "server_stalls_wandb_init"])
def test_a_server_that_stops_answering_costs_the_deadline_then_the_run_logs_offline(
        cli, tmp_path: Path, answer_probe: bool) -> None:
    run_dir = tmp_path / "run"
    with _server(answer_probe) as env:
        start = time.monotonic()
        proc = cli(*SHORT, DEADLINE, f"hydra.run.dir={run_dir}", env=env)
        elapsed = time.monotonic() - start
    assert elapsed < 45  # the deadline and the run, not W&B's own ~90 s wait
    said = proc.stdout + proc.stderr
    assert ("could not start the run online" if answer_probe else "unreachable") in said
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.parametrize("answer_probe", [False, True], ids=["silent_server", "server_stalls_wandb_init"])
def test_a_server_that_stops_answering_without_fallback_stops_before_training(
        cli, tmp_path: Path, answer_probe: bool) -> None:
    run_dir = tmp_path / "run"
    with _server(answer_probe) as env:
        proc = cli(*SHORT, DEADLINE, "wandb.offline_fallback=false", f"hydra.run.dir={run_dir}", env=env,
                   check=False)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("bnrepro-train:")]
    assert proc.returncode == 2 and len(lines) == 1 and "offline_fallback" in lines[0]
    assert "Traceback" not in proc.stderr and not (run_dir / "metrics.csv").exists()
    if (run_dir / "summary.json").exists():  # W&B starts after the run's first summary: it says why it stopped
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
