"""Reliability through the real CLI: concurrent writers, signals to launchers and their workers, files that are
corrupt, read-only or out of space, and each one's promised end (README: "Reliability: guarantees and exit codes").

Real processes, real signals, real files and mounts: no mocks. Read-only folders and a full disk are real mounts when
the tests run as root (a read-only bind mount, a tiny tmpfs), else permissions and RLIMIT_FSIZE.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from warm_cli import WarmCLI, WarmProcess

from bnrepro.errors import EXIT_CORRUPT, EXIT_IO, EXIT_REFUSED
from bnrepro.run.checkpoint import CHECKPOINT_FILE
from bnrepro.run.lock import LOCK_FILE

REPO = Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, "-m", "bnrepro.train"]
# long enough that a signal lands mid-run, short enough for the suite; checkpoints every 200 steps
RUN = ("model.bn=before", "train.steps=1200", "train.eval_every=250", "train.checkpoint_every=200",
       "train.progress=false", "wandb.mode=disabled")
# runs that another process must find still running: they end by SIGTERM, not by finishing
LONG = (*RUN, "train.steps=50000")
# sweeps stopped once two jobs have checkpointed: no job may finish first, and continuing them takes seconds
SWEEP = (*RUN, "train.steps=2000", "train.eval_every=500")
QUIET_SWEEP = "hydra.callbacks.sweep_progress.enabled=false"  # stderr holds only what the command itself says
ROOT = os.geteuid() == 0


# --- helpers ---------------------------------------------------------------------------------------------------


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _steps(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def _files(folder: Path) -> dict[Path, bytes]:
    """Every file's bytes, W&B's own folder aside."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and "wandb" not in p.parts}


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _wait_for(done: Callable[[], bool], proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        assert proc is None or proc.poll() is None, f"the process ended early: {proc.communicate()[1]}"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    """The live child processes of pid."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has ended: only its exit status waits for its parent


def _no_tmp_files(folder: Path) -> None:
    assert not [p for p in folder.rglob("*.tmp")], list(folder.rglob("*.tmp"))


@pytest.fixture(scope="module")
def start(cli_env: dict[str, str], warm: Callable[[], WarmCLI]) -> Callable[..., subprocess.Popen | WarmProcess]:
    """Start `bnrepro-train` with the session's data cache; session=True: in a process group of its own, as a
    terminal's foreground job is (a Ctrl-C there reaches the whole group). Forked from the warm interpreter
    (warm_cli.py), or a new `python -m bnrepro.train` where the start-up is the subject (fresh=True), the
    environment changes or Popen's own options (`popen`, e.g. preexec_fn) are asked for."""

    def run(*args: str, env: dict[str, str] | None = None, session: bool = False, fresh: bool = False,
            **popen) -> subprocess.Popen | WarmProcess:
        if not (fresh or env or popen):
            return warm().start(list(args), REPO, cli_env, session=session)
        return subprocess.Popen([*TRAIN, *args], cwd=REPO, env={**cli_env, **(env or {})}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=session, **popen)

    return run


@pytest.fixture(scope="module")
def uninterrupted(cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("reliability") / "uninterrupted"
    cli(*RUN, f"hydra.run.dir={run_dir}")
    return run_dir


@pytest.fixture(scope="module")
def stopped(start, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped by SIGTERM after its first checkpoint: an unfinished run folder for the tests to copy."""
    run_dir = tmp_path_factory.mktemp("reliability") / "stopped"
    proc = start(*RUN, f"hydra.run.dir={run_dir}")
    _wait_for(lambda: (run_dir / CHECKPOINT_FILE).exists(), proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and _summary(run_dir)["status"] == "interrupted"
    return run_dir


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


@contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """folder read-only for the processes the test starts: a read-only bind mount onto itself as root (root writes
    through permissions), else its permissions."""
    if not ROOT:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (no CAP_SYS_ADMIN)")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


# --- one writer per run folder (defect 1) --------------------------------------------------------------------


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    return stderr


def _rows_in_order(run_dir: Path) -> None:
    rows = _steps(run_dir)  # one writer: every row once, in order
    assert rows == list(range(0, rows[-1] + 1, 250)), rows


def test_a_second_writer_is_refused_naming_the_holder_and_touches_nothing(cli, start, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = start(*LONG, f"hydra.run.dir={run_dir}")
    _wait_for(lambda: (run_dir / CHECKPOINT_FILE).exists(), first)
    hydra_files = _files(run_dir / ".hydra")
    assert (run_dir / LOCK_FILE).read_text().strip() == str(first.pid)  # for people; /proc/locks says it too
    second = cli(*LONG, f"hydra.run.dir={run_dir}", check=False)
    assert second.returncode == EXIT_REFUSED
    line = _one_line(second.stderr)
    assert f"process {first.pid}" in line and str(run_dir) in line
    assert _files(run_dir / ".hydra") == hydra_files  # Hydra's files too: the refused command wrote nothing
    _stop(first)
    assert _summary(run_dir)["status"] == "interrupted"
    _rows_in_order(run_dir)


def test_two_writers_started_together_leave_one_run_in_order(start, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    procs = [start(*LONG, f"hydra.run.dir={run_dir}") for _ in range(2)]
    _wait_for(lambda: any(proc.poll() is not None for proc in procs))
    (refused,) = [proc for proc in procs if proc.poll() is not None]
    (writer,) = [proc for proc in procs if proc is not refused]
    assert refused.returncode == EXIT_REFUSED and f"process {writer.pid}" in _one_line(refused.communicate()[1])
    _wait_for(lambda: (run_dir / CHECKPOINT_FILE).exists(), writer)
    _stop(writer)
    _rows_in_order(run_dir)


def test_a_resubmitted_running_sweep_is_refused_before_it_writes(cli, start, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ("-m", "seed=0,1", *LONG, f"hydra.sweep.dir={sweep}", QUIET_SWEEP)
    first = start(*args)
    _wait_for(lambda: bool(list(sweep.glob(f"0_*/{CHECKPOINT_FILE}"))), first)
    multirun = (sweep / "multirun.yaml").read_bytes()
    second = cli(*args, check=False)
    assert second.returncode == EXIT_REFUSED and f"process {first.pid}" in _one_line(second.stderr)
    assert "hydra.sweep.dir" in second.stderr
    assert (sweep / "multirun.yaml").read_bytes() == multirun
    assert not list(sweep.glob("1_*"))  # the second sweep started none of its jobs
    _stop(first)


# --- a checkpoint resumes only under its own config and BN path (defect 3, rough edges) ----------------------


@pytest.mark.parametrize("summary", ["missing", "null"])
def test_a_checkpoint_of_another_config_is_refused_whatever_the_summary(cli, stopped: Path, uninterrupted: Path,
                                                                        tmp_path: Path, summary: str) -> None:
    run_dir = _copy(stopped, tmp_path)
    if summary == "missing":
        (run_dir / "summary.json").unlink()
    else:
        (run_dir / "summary.json").write_text("null")
    files = _files(run_dir)
    proc = cli(*RUN, "optim.lr=0.5", f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode == EXIT_REFUSED
    assert "another config" in _one_line(proc.stderr) and CHECKPOINT_FILE in proc.stderr
    assert _files(run_dir) == files
    # its own config continues from the checkpoint, summary or not, to the uninterrupted run's numbers
    cli(*RUN, f"hydra.run.dir={run_dir}")
    assert _summary(run_dir)["resumed_from_step"] == torch.load(stopped / CHECKPOINT_FILE)["loop"]["step"]
    assert (run_dir / "metrics.csv").read_bytes() == (uninterrupted / "metrics.csv").read_bytes()


def test_bn_path_is_recorded_and_a_resume_on_another_is_refused_unless_forced(cli, stopped: Path,
                                                                               tmp_path: Path) -> None:
    recorded = _summary(stopped)["bn_path"]
    assert recorded == torch.load(stopped / CHECKPOINT_FILE)["bn_path"] == "cpp_kernel"
    run_dir = _copy(stopped, tmp_path)
    files = _files(run_dir)
    # another environment: no C++ compiler and an empty extension cache, so BN runs on torch ops
    no_kernel = {"CXX": "/bin/false", "TORCH_EXTENSIONS_DIR": str(tmp_path / "no-extensions")}
    proc = cli(*RUN, f"hydra.run.dir={run_dir}", env=no_kernel, check=False)
    assert proc.returncode == EXIT_REFUSED
    line = [x for x in proc.stderr.splitlines() if x.startswith("bnrepro-train:")]
    assert len(line) == 1 and "cpp_kernel" in line[0] and "torch_ops" in line[0] and "train.resume=force" in line[0]
    assert _files(run_dir) == files
    cli(*RUN, "train.resume=force", f"hydra.run.dir={run_dir}", env=no_kernel)
    summary = _summary(run_dir)
    assert summary["status"] == "completed"
    assert (summary["bn_path"], summary["resumed_bn_path"]) == ("torch_ops", "cpp_kernel")


@pytest.mark.parametrize("override, key", [("train.batch_size=60001", "train.batch_size"),
                                           ("optim.momentum=1", "optim.momentum"),
                                           ("optim.momentum=1.5", "optim.momentum")])
def test_a_batch_past_the_training_set_or_a_momentum_of_1_is_refused_in_one_line(cli, tmp_path: Path, override: str,
                                                                                  key: str) -> None:
    proc = cli(*RUN, override, f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == EXIT_REFUSED and key in _one_line(proc.stderr)
    assert not (tmp_path / "run" / "summary.json").exists()


# --- broken files: one line, exit 4, nothing changed -----------------------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_broken_checkpoint_is_one_line_that_says_to_delete_it(cli, stopped: Path, tmp_path: Path,
                                                                damage: str) -> None:
    run_dir = _copy(stopped, tmp_path)
    checkpoint = run_dir / CHECKPOINT_FILE
    checkpoint.write_bytes(b"" if damage == "empty" else checkpoint.read_bytes()[:5000])
    files = _files(run_dir)
    proc = cli(*RUN, f"hydra.run.dir={run_dir}", check=False)
    line = _one_line(proc.stderr)
    assert proc.returncode == EXIT_CORRUPT and str(checkpoint) in line and "delete it" in line
    assert _files(run_dir) == files


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_a_garbage_summary_is_one_line_that_says_to_delete_it(cli, stopped: Path, tmp_path: Path,
                                                              content: str) -> None:
    run_dir = _copy(stopped, tmp_path)
    (run_dir / "summary.json").write_text(content)
    files = _files(run_dir)
    proc = cli(*RUN, f"hydra.run.dir={run_dir}", check=False)
    line = _one_line(proc.stderr)
    assert proc.returncode == EXIT_CORRUPT and str(run_dir / "summary.json") in line and "delete it" in line
    assert _files(run_dir) == files


def test_a_broken_data_cache_is_one_line_and_touches_no_run(cli, data_root: Path, tmp_path: Path) -> None:
    cache = Path(shutil.copytree(data_root, tmp_path / "cache"))
    images = next(cache.rglob("train-images-idx3-ubyte"))
    with open(images, "r+b") as f:
        f.truncate(1000)
    proc = cli(*RUN, f"hydra.run.dir={tmp_path / 'run'}", env={"BNREPRO_DATA": str(cache)}, check=False)
    line = _one_line(proc.stderr)
    assert proc.returncode == EXIT_CORRUPT and str(images) in line and "delete" in line
    assert not (tmp_path / "run" / "summary.json").exists()


# --- folders that cannot be written: one line, exit 3 ----------------------------------------------------------


def test_a_read_only_run_folder_skips_its_finished_run_and_refuses_an_unfinished_one(
        cli, stopped: Path, uninterrupted: Path, tmp_path: Path) -> None:
    finished, unfinished = _copy(uninterrupted, tmp_path), _copy(stopped, tmp_path)
    with _read_only(finished):
        proc = cli(*RUN, f"hydra.run.dir={finished}")
        assert "skipped" in proc.stdout and proc.stderr == ""
    files = _files(unfinished)
    with _read_only(unfinished):
        proc = cli(*RUN, f"hydra.run.dir={unfinished}", check=False)
    line = _one_line(proc.stderr)
    assert proc.returncode == EXIT_IO and str(unfinished) in line and "writable" in line
    assert _files(unfinished) == files


def test_an_unwritable_data_cache_folder_is_one_line(cli, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    with _read_only(cache):
        proc = cli(*RUN, f"hydra.run.dir={tmp_path / 'run'}", env={"BNREPRO_DATA": str(cache)}, check=False)
    line = _one_line(proc.stderr)
    assert proc.returncode == EXIT_IO and str(cache) in line and "BNREPRO_DATA" in line


def test_a_read_only_home_runs_with_one_notice(cli, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # the real extension cache: the C++ kernel is built there already, and a fresh build would take a minute
    extensions = os.environ.get("TORCH_EXTENSIONS_DIR") or str(Path("~/.cache/torch_extensions").expanduser())
    with _read_only(home):
        proc = cli("model.bn=before", "train.steps=100", "train.eval_every=50", "train.progress=false",
                   "wandb.mode=offline", f"hydra.run.dir={tmp_path / 'run'}",
                   env={"HOME": str(home), "TORCH_EXTENSIONS_DIR": extensions})
    line = _one_line(proc.stderr)
    assert "not writable" in line and "WANDB_CACHE_DIR" in line
    summary = _summary(tmp_path / "run")
    assert summary["status"] == "completed" and summary["bn_path"] == "cpp_kernel"
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))


def test_no_home_at_all_runs_when_the_data_cache_is_set(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env.items() if k != "HOME"}  # BNREPRO_DATA stays: the session's cache
    proc = subprocess.run([*TRAIN, "train.steps=50", "train.eval_every=50", "train.progress=false",
                           "wandb.mode=disabled", f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert _summary(tmp_path / "run")["status"] == "completed"


# --- a full disk: the run is marked failed, and the same command continues it ----------------------------------


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("how", ["tmpfs", "file_size_limit"])
def test_a_full_disk_marks_the_run_failed_and_the_same_command_continues_it(
        cli, start, uninterrupted: Path, tmp_path: Path, how: str) -> None:
    folder = tmp_path / "disk"
    folder.mkdir()
    run_dir = folder / "run"
    if how == "tmpfs":
        if not ROOT:
            pytest.skip("mounting a tmpfs needs root; the file size limit variant runs instead")
        # room for one checkpoint (~0.9 MB) and the rest, not for the second beside it (atomic: a new file, then
        # a rename), so that the fault comes mid-run, after a checkpoint
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1400k", "tmpfs", str(folder)], check=True)
        proc = start(*RUN, f"hydra.run.dir={run_dir}")
    else:  # a checkpoint is larger than the limit, so the first one fails; metrics.csv and summary.json are not
        proc = start(*RUN, f"hydra.run.dir={run_dir}", preexec_fn=_limit_file_size(200_000))
    try:
        _, stderr = proc.communicate(timeout=120)
        line = _one_line(stderr)
        assert proc.returncode == EXIT_IO and str(run_dir / CHECKPOINT_FILE) in line
        assert ("disk full" if how == "tmpfs" else "file size limit") in line and "same command" in line
        summary = _summary(run_dir)
        assert summary["status"] == "failed" and summary["exit_code"] == EXIT_IO
        _no_tmp_files(run_dir)
        rows = _steps(run_dir)  # every row written before the fault is there, whole and in order
        assert rows == list(range(0, rows[-1] + 1, 250)) and rows[-1] >= (250 if how == "tmpfs" else 0)
        if how == "tmpfs":
            assert torch.load(run_dir / CHECKPOINT_FILE)["loop"]["step"] == 200
            subprocess.run(["mount", "-o", "remount,size=20m", str(folder)], check=True)
        cli(*RUN, f"hydra.run.dir={run_dir}")
        summary = _summary(run_dir)
        assert summary["status"] == "completed" and summary.get("resumed_from_step") == (200 if how == "tmpfs"
                                                                                          else None)
        assert (run_dir / "metrics.csv").read_bytes() == (uninterrupted / "metrics.csv").read_bytes()
    finally:
        if how == "tmpfs":
            subprocess.run(["umount", str(folder)], check=True)


# --- signals: start-up, twice, to launchers -----------------------------------------------------------------------


@pytest.mark.parametrize("signum, when", [(signal.SIGINT, 1.5), (signal.SIGTERM, 3.0), (signal.SIGINT, "summary"),
                                          (signal.SIGTERM, "summary")],
                         ids=["sigint_at_1.5s", "sigterm_at_3s", "sigint_as_w&b_starts", "sigterm_as_w&b_starts"])
def test_a_signal_during_start_up_is_one_line_and_never_leaves_running(start, tmp_path: Path, signum: int,
                                                                       when: float | str) -> None:
    run_dir = tmp_path / "run"
    proc = start(*RUN, "wandb.mode=offline", f"hydra.run.dir={run_dir}", fresh=True)  # the imports included
    if when == "summary":  # the first moment the run folder holds a summary: W&B is starting
        _wait_for(lambda: (run_dir / "summary.json").exists(), proc)
    else:
        time.sleep(when)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    assert _one_line(stderr).startswith(f"bnrepro-train: interrupted by {signal.Signals(signum).name}")
    if (run_dir / "summary.json").exists():
        assert _summary(run_dir)["status"] == "interrupted"
    if when == "summary":
        assert not (run_dir / "metrics.csv").exists() or _steps(run_dir) == [0]
    _no_tmp_files(tmp_path)


def test_a_second_sigterm_stops_at_once_with_143_and_the_resume_is_bit_identical(
        cli, start, uninterrupted: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start(*RUN, f"hydra.run.dir={run_dir}")
    _wait_for(lambda: (run_dir / CHECKPOINT_FILE).exists(), proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.002)  # the first one's checkpoint is being written (or about to be)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert _one_line(stderr).startswith("bnrepro-train: interrupted by SIGTERM")
    summary = _summary(run_dir)
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM"
    assert torch.load(run_dir / CHECKPOINT_FILE)["loop"]["step"] == summary["steps_done"]  # a whole checkpoint
    _no_tmp_files(run_dir)
    cli(*RUN, f"hydra.run.dir={run_dir}")
    assert (run_dir / "metrics.csv").read_bytes() == (uninterrupted / "metrics.csv").read_bytes()


JOBLIB = ("-m", "seed=0,1,2", *SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", QUIET_SWEEP)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        children = _children(todo.pop())
        found += children
        todo += children
    return found


def _two_jobs_training(sweep: Path, proc: subprocess.Popen) -> list[int]:
    """Wait until two jobs have checkpointed; the launcher's processes below it then."""
    _wait_for(lambda: len(list(sweep.glob(f"*/{CHECKPOINT_FILE}"))) >= 2, proc)
    return _descendants(proc.pid)


def _stopped_jobs(sweep: Path) -> dict[str, dict]:
    stopped = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    for name, summary in stopped.items():
        assert summary["status"] == "interrupted", name
        assert torch.load(sweep / name / CHECKPOINT_FILE)["loop"]["step"] == summary["steps_done"] > 0
    return stopped


@pytest.mark.parametrize("to_group, signum", [(False, signal.SIGTERM), (True, signal.SIGINT), (True, signal.SIGTERM)],
                         ids=["kill_launcher_alone", "ctrl_c_to_the_group", "sigterm_to_the_group"])
def test_a_signalled_joblib_sweep_stops_every_worker_cleanly(cli, start, tmp_path: Path, to_group: bool,
                                                             signum: int) -> None:
    sweep = tmp_path / "sweep"
    proc = start(*JOBLIB, f"hydra.sweep.dir={sweep}", session=True)
    workers = _two_jobs_training(sweep, proc)
    if to_group:  # as a terminal's Ctrl-C, or `kill -TERM -PGID`: every process of the group
        os.killpg(proc.pid, signum)
    else:  # `kill PID`: the launcher alone
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum
    line = _one_line(stderr)  # no leaked-semaphore warnings, no traceback
    assert f"interrupted by {signal.Signals(signum).name}" in line and f"hydra.sweep.dir={sweep}" in line
    _wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=30)  # no orphans, busy or idle
    stopped = _stopped_jobs(sweep)
    assert len(stopped) == 2 and not list(sweep.glob("2_*"))  # the queued job never started
    _no_tmp_files(sweep)
    # the same command finishing such a sweep: tests/test_resume.py and, under the vectorized launcher,
    # tests/test_vectorized.py


@pytest.mark.parametrize("launcher", ["joblib", "vectorized", "submitit_local"])
def test_workers_of_a_killed_launcher_checkpoint_and_end(start, tmp_path: Path, launcher: str) -> None:
    sweep = tmp_path / "sweep"
    parallel = () if launcher == "submitit_local" else ("hydra.launcher.n_jobs=2",)
    proc = start("-m", "seed=0,1", *SWEEP, f"hydra/launcher={launcher}", *parallel, QUIET_SWEEP,
                 f"hydra.sweep.dir={sweep}", session=True)
    workers = _two_jobs_training(sweep, proc)
    proc.kill()
    proc.communicate(timeout=30)
    _wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=60)
    assert len(_stopped_jobs(sweep)) == 2
    _no_tmp_files(sweep)
