"""A sweep's progress line (bnrepro.launch.progress): the monitor on real job folders written step by step, the
printer on a real pipe and a real pseudo-terminal, and real multiruns of bnrepro-train under several launchers."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import select
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bnrepro.launch.progress import (
    Poll,
    ProgressPrinter,
    SharedTerminalStream,
    SweepMonitor,
    SweepProgress,
    count_jobs,
    format_final,
    format_progress,
)

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def make_job(sweep: Path, name: str, steps: int) -> Path:
    """A job folder as Hydra leaves it before the job's code runs: only its saved config."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(f"seed: 0\ntrain:\n  steps: {steps}\n  eval_every: 100\n")
    return job


def append_rows(job: Path, *rows: tuple[int, float | None]) -> None:
    """metrics.csv rows as a run appends them (the csv module's \\r\\n line ends): whole lines, the header with the
    first; None: no test_acc."""
    path = job / "metrics.csv"
    text = "" if path.exists() else "step,test_acc,test_loss,train_loss\r\n"
    text += "".join(f"{step},{'' if acc is None else acc},0.3,0.25\r\n" for step, acc in rows)
    with path.open("a", newline="") as f:
        f.write(text)


def write_summary(job: Path, **summary: object) -> None:
    """summary.json as a run replaces it: a whole new file renamed over the old one."""
    tmp = job / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary))
    os.replace(tmp, job / "summary.json")


def test_monitor_follows_a_sweep_written_step_by_step(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"  # made only once the first job starts, as the launchers do
    monitor = SweepMonitor(sweep, total_jobs=3, default_steps=600, started=0.0)

    first = monitor.poll(now=0.0).state
    assert (first.done, first.seen, first.jobs, first.steps_left) == (0, 0, 3, 1800)
    assert first.steps_per_s is None and first.eta_s is None and first.last_test_acc is None

    job0 = make_job(sweep, "0_model.bn=none", steps=600)
    write_summary(job0, status="running", steps_done=0)
    append_rows(job0, (100, 0.91), (200, 0.93), (300, 0.95), (400, None))  # the newest row has no test_acc
    poll = monitor.poll(now=10.0)
    assert poll.finished == []
    s = poll.state
    assert (s.done, s.running, s.seen, s.steps_done, s.new_steps) == (0, 1, 1, 400, 400)
    assert s.steps_per_s == pytest.approx(40.0)
    assert s.steps_left == 200 + 2 * 600  # the two jobs not started yet: as long as the one that did
    assert s.eta_s == pytest.approx(1400 / 40)
    assert s.last_test_acc == pytest.approx(0.95)
    line = format_progress(s)
    assert "0/3 jobs done, 1 running" in line and "40 steps/s" in line and "ETA 35s" in line
    assert "last test acc 95.00%" in line and len(line) < 120

    append_rows(job0, (500, 0.96), (600, 0.9759))
    write_summary(job0, status="completed", steps_done=600, final_test_acc=0.9759, best_test_acc=0.9759,
                  wall_time_s=105.2)
    job1 = make_job(sweep, "1_model.bn=before", steps=600)
    poll = monitor.poll(now=20.0)
    assert poll.finished == ["[1/3] 0_model.bn=none: completed, final test acc 97.59%, 1m 45s"]
    s = poll.state
    assert (s.done, s.running, s.seen, s.new_steps) == (1, 0, 2, 600)
    assert s.steps_per_s == pytest.approx(30.0) and s.eta_s == pytest.approx(1200 / 30)
    assert s.last_test_acc == pytest.approx(0.9759)

    write_summary(job1, status="running", steps_done=0)
    append_rows(job1, (100, 0.5), (200, 0.1))
    write_summary(job1, status="diverged", steps_done=200, diverged_step=200, best_test_acc=0.5, wall_time_s=3.0)
    job2 = make_job(sweep, "2_model.bn=after", steps=300)
    poll = monitor.poll(now=30.0)
    assert poll.finished == ["[2/3] 1_model.bn=before: diverged at step 200, best test acc 50.00%, 3s"]
    assert (poll.state.done, poll.state.steps_left) == (2, 300)  # a diverged job has nothing left to do

    write_summary(job2, status="running", steps_done=0)
    append_rows(job2, (100, 0.8), (200, 0.9), (300, 0.92))
    write_summary(job2, status="completed", steps_done=300, final_test_acc=0.92, best_test_acc=0.92, wall_time_s=4)
    poll = monitor.poll(now=40.0)
    assert poll.finished == ["[3/3] 2_model.bn=after: completed, final test acc 92.00%, 4s"]
    s = poll.state
    assert (s.done, s.running, s.steps_left, s.steps_done, s.new_steps) == (3, 0, 0, 1100, 1100)
    assert s.ended == {"completed": 2, "diverged": 1}
    final = format_final(s, stopped=False)
    assert final.startswith("sweep finished: 3/3 jobs done (2 completed, 1 diverged) in 40s")
    assert "28 steps/s" in final and "last test acc 92.00%" in final
    assert monitor.poll(now=41.0).finished == []  # each job's line comes once


def test_a_resumed_sweep_counts_finished_folders_as_done_and_only_new_steps(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    done = make_job(sweep, "0_seed=0", steps=400)
    append_rows(done, (200, 0.9), (400, 0.95))
    write_summary(done, status="completed", steps_done=400, final_test_acc=0.95, wall_time_s=9)
    cut = make_job(sweep, "1_seed=1", steps=400)  # an earlier sweep interrupted it at step 200
    append_rows(cut, (100, 0.8), (200, 0.85))
    write_summary(cut, status="interrupted", steps_done=200)
    monitor = SweepMonitor(sweep, total_jobs=2, default_steps=400, started=0.0)

    poll = monitor.poll(now=0.0)
    assert poll.finished == ["[1/2] 0_seed=0: completed earlier, skipped, final test acc 95.00%"]
    assert (poll.state.done, poll.state.steps_done, poll.state.new_steps, poll.state.steps_left) == (1, 600, 0, 200)
    # the old `interrupted` is not this sweep's: the job is not done before its run replaces that summary
    assert monitor.poll(now=5.0).state.done == 1

    write_summary(cut, status="running", steps_done=200, resumed_from_step=200)
    append_rows(cut, (300, 0.9))
    s = monitor.poll(now=10.0).state
    assert (s.done, s.running, s.new_steps) == (1, 1, 100)
    assert s.steps_per_s == pytest.approx(10.0) and s.eta_s == pytest.approx(10.0)

    append_rows(cut, (400, 0.93))
    write_summary(cut, status="completed", steps_done=400, final_test_acc=0.93, wall_time_s=61)
    poll = monitor.poll(now=20.0)
    assert poll.finished == ["[2/2] 1_seed=1: completed, final test acc 93.00%, 1m 01s"]
    assert (poll.state.done, poll.state.new_steps) == (2, 200)


def test_monitor_reads_the_tail_of_metrics_and_waits_for_whole_rows(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    job = make_job(sweep, "0_long", steps=10**6)
    monitor = SweepMonitor(sweep, total_jobs=1, started=0.0)
    monitor.poll(now=0.0)
    # the rows sit behind 8 MiB of NUL bytes (a sparse file), which a CSV reader of the whole file refuses
    with (job / "metrics.csv").open("wb") as f:
        f.truncate(8 << 20)
        f.seek(0, os.SEEK_END)
        f.write(b"\n" + b"".join(f"{step},0.{step}\n".encode() for step in range(1000, 1100)))
        f.write(b"".join(f"{step},\n".encode() for step in range(1100, 1900)))  # > 4 KiB of rows without test_acc
        f.write(b"1900,0.99")  # a row still being written
    s = monitor.poll(now=1.0).state
    assert s.steps_done == 1899 and s.last_test_acc == pytest.approx(0.1099)

    with (job / "metrics.csv").open("ab") as f:
        f.write(b"7\n")
    s = monitor.poll(now=2.0).state
    assert s.steps_done == 1900 and s.last_test_acc == pytest.approx(0.997)


def test_job_folders_nested_by_the_subdir_pattern_are_found(tmp_path: Path) -> None:
    # an override value holding "/" (data.root=/data/x) puts the job folder below a folder of its own
    make_job(tmp_path, "0_data.root=/data/x", steps=100)
    make_job(tmp_path, "1_data.root=/data/y", steps=100)
    (tmp_path / "notes").mkdir()
    assert SweepMonitor(tmp_path, started=0.0).poll(now=0.0).state.seen == 2


def _poll_with_a_finished_job(tmp_path: Path) -> Poll:
    job = make_job(tmp_path, "0_model.bn=before,seed=0", steps=200)
    monitor = SweepMonitor(tmp_path, total_jobs=2, started=0.0)
    monitor.poll(now=0.0)
    append_rows(job, (100, 0.9), (200, 0.9759))
    write_summary(job, status="completed", steps_done=200, final_test_acc=0.9759, wall_time_s=105)
    return monitor.poll(now=10.0)


def test_printer_off_a_terminal_writes_whole_lines_every_log_every_s(tmp_path: Path) -> None:
    poll = _poll_with_a_finished_job(tmp_path)
    out = io.StringIO()
    printer = ProgressPrinter(out, log_every_s=30.0, started=0.0)
    assert not printer.tty
    printer.show(poll, now=10.0)
    assert out.getvalue() == "[1/2] 0_model.bn=before,seed=0: completed, final test acc 97.59%, 1m 45s\n"
    printer.show(Poll(poll.state, []), now=20.0)
    assert out.getvalue().count("\n") == 1  # no progress line before log_every_s
    printer.show(Poll(poll.state, []), now=31.0)
    printer.finish(Poll(poll.state, []))
    lines = out.getvalue().splitlines()
    assert lines[1] == format_progress(poll.state) and lines[1].startswith("sweep: 1/2 jobs done | 50% of steps")
    assert lines[2].startswith("sweep finished: 1/2 jobs done (1 completed) in 10s")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert all(len(line) < 120 for line in lines)


def test_a_sweep_stopped_before_any_job_did_anything_adds_no_line(tmp_path: Path) -> None:
    # a config mistake in the first job exits 2 with its one line; the sweep's end adds nothing to it
    make_job(tmp_path, "0_model.activation=bogus", steps=100)
    monitor = SweepMonitor(tmp_path, total_jobs=2, started=0.0)
    monitor.poll(now=0.0)
    out = io.StringIO()
    ProgressPrinter(out, started=0.0).finish(monitor.poll(now=1.0), stopped=True)
    assert out.getvalue() == ""
    ProgressPrinter(out, started=0.0).finish(monitor.poll(now=2.0), stopped=False)
    assert out.getvalue() == "sweep finished: 0/2 jobs done in 2s\n"


def _read_terminal(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0.5)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks).decode()


def test_printer_on_a_terminal_rewrites_one_line_and_puts_job_lines_above_it(tmp_path: Path) -> None:
    poll = _poll_with_a_finished_job(tmp_path)
    main_fd, terminal_fd = os.openpty()
    with os.fdopen(terminal_fd, "w") as terminal:
        printer = ProgressPrinter(terminal, log_every_s=30.0, started=0.0)
        assert printer.tty
        printer.show(Poll(poll.state, []), now=1.0)
        printer.show(poll, now=2.0)
        printer.finish(Poll(poll.state, []))
        text = _read_terminal(main_fd).replace("\r\n", "\n")  # the terminal sends "\n" as "\r\n"
    os.close(main_fd)
    progress = format_progress(poll.state)
    assert text == (f"\r\x1b[K{progress}"
                    "\r\x1b[K[1/2] 0_model.bn=before,seed=0: completed, final test acc 97.59%, 1m 45s\n"
                    f"\r\x1b[K{progress}"
                    f"\r\x1b[K{format_final(poll.state, stopped=False)}\n")


def test_other_text_on_the_terminal_never_shares_the_progress_line(tmp_path: Path) -> None:
    state = _poll_with_a_finished_job(tmp_path).state
    progress = f"\r\x1b[K{format_progress(state)}"
    main_fd, terminal_fd = os.openpty()
    with os.fdopen(terminal_fd, "w") as terminal, os.fdopen(os.dup(terminal_fd), "w") as other:
        printer = ProgressPrinter(terminal, started=0.0)
        shared = SharedTerminalStream(other, printer)  # what sys.stdout becomes during a sweep on a terminal
        printer.show(Poll(state, []))
        print("a log line", file=shared, flush=True)
        printer.show(Poll(state, []))
        shared.write("a bar at 10%\r")  # text that keeps its line: the progress line waits
        shared.flush()
        printer.show(Poll(state, []))
        shared.write("a bar at 100%\n")
        shared.flush()
        printer.show(Poll(state, []))
        text = _read_terminal(main_fd).replace("\r\n", "\n")
        assert shared.isatty() and shared.fileno() == other.fileno()  # the rest is the wrapped stream's
    os.close(main_fd)
    assert text == f"{progress}\r\x1b[Ka log line\n{progress}\r\x1b[Ka bar at 10%\ra bar at 100%\n{progress}"


def test_count_jobs_counts_as_the_basic_sweeper_does() -> None:
    def config(task: list[str], params: dict[str, str] | None = None, sweeper: str = BASIC_SWEEPER) -> object:
        return OmegaConf.create({"hydra": {"sweeper": {"_target_": sweeper, "params": params},
                                           "overrides": {"task": task}}})

    assert count_jobs(config(["model.bn=none,before", "optim.lr=choice(0.1,1)", "train.steps=range(100,400,100)",
                              "wandb.mode=disabled"], params={"seed": "0,1,2"})) == 2 * 2 * 3 * 3
    assert count_jobs(config(["seed=7"], params={"seed": "0,1,2", "model.bn": "none,before"})) == 2  # last wins
    assert count_jobs(config([])) == 1
    assert count_jobs(config(["seed=interval(0,1)"])) is None  # the basic sweeper refuses it
    assert count_jobs(config(["seed=0,1"], sweeper="hydra_plugins.hydra_optuna_sweeper.OptunaSweeper")) is None
    # bnrepro's own (every multirun's: conf/hydra/sweeper/basic.yaml) splits as the basic sweeper it extends
    assert count_jobs(config(["seed=0,1"], sweeper="hydra_plugins.bnrepro_sweeper.sweeper.CheckedSweeper")) == 2


def test_callback_polls_in_a_thread_until_the_sweep_ends(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "sweep"
    config = OmegaConf.create({"train": {"steps": 200}, "hydra": {
        "sweep": {"dir": str(sweep)}, "sweeper": {"_target_": BASIC_SWEEPER, "params": None},
        "overrides": {"task": ["seed=0,1"]}}})
    callback = SweepProgress(interval_s=0.02, log_every_s=0)
    callback.on_multirun_start(config)
    try:
        # joblib and submitit pickle Hydra's callbacks with the jobs they send to other processes
        copy = pickle.loads(pickle.dumps(callback))
        assert (copy.interval_s, copy.log_every_s, copy.monitor) == (0.02, 0, None)
        for seed in (0, 1):
            job = make_job(sweep, f"{seed}_seed={seed}", steps=200)
            append_rows(job, (100, 0.9), (200, 0.95))
            write_summary(job, status="completed", steps_done=200, final_test_acc=0.95, wall_time_s=2)
        err, deadline = "", time.monotonic() + 30
        while "[2/2]" not in err and time.monotonic() < deadline:
            time.sleep(0.02)
            err += capsys.readouterr().err
        assert "[2/2]" in err  # from the thread, before the sweep's end
    finally:
        callback.on_multirun_end(config)
    lines = (err + capsys.readouterr().err).splitlines()
    assert [line.split(":")[0] for line in lines] == ["[1/2] 0_seed=0", "[2/2] 1_seed=1", "sweep finished"]
    assert lines[-1].startswith("sweep finished: 2/2 jobs done (2 completed)")
    assert callback._thread is not None and not callback._thread.is_alive()


# ---- end to end: real multiruns of bnrepro-train -----------------------------------------------------------------

FINISHED_JOB = re.compile(r"^\[[12]/2\] (?P<name>[01]_model\.bn=\w+\S*): completed, final test acc \d+\.\d\d%, .+s$")
LAUNCHERS = {
    "basic": (),
    "joblib": ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
    "vectorized": ("hydra/launcher=vectorized", "hydra.launcher.n_jobs=1"),
}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_sweep_prints_its_progress_under_every_launcher(cli, tmp_path: Path, launcher: str) -> None:
    sweep = tmp_path / "sweep"
    proc = cli("-m", "model.bn=none,before", "train.steps=600", "train.eval_every=100", "train.progress=false",
               "wandb.mode=disabled", f"hydra.sweep.dir={sweep}", *LAUNCHERS[launcher], timeout=600)
    lines = proc.stderr.splitlines()
    finished = [line for line in lines if FINISHED_JOB.match(line)]
    assert len(finished) == 2, proc.stderr
    names = sorted(FINISHED_JOB.match(line)["name"] for line in finished)
    assert names[0].startswith("0_model.bn=none") and names[1].startswith("1_model.bn=before"), names
    final = [line for line in lines if line.startswith("sweep finished:")]
    assert len(final) == 1 and final[0].startswith("sweep finished: 2/2 jobs done (2 completed)"), proc.stderr
    assert "last test acc" in final[0] and "steps/s" in final[0]
    assert "\r" not in proc.stderr  # captured, not a terminal
    assert all(len(line) < 120 for line in finished + final)


def test_the_progress_line_turns_off(cli, tmp_path: Path) -> None:
    proc = cli("-m", "seed=0", "train.steps=100", "train.eval_every=50", "train.progress=false", "wandb.mode=disabled",
               f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.callbacks.sweep_progress.enabled=false")
    assert len(list((tmp_path / "sweep").glob("*/summary.json"))) == 1
    assert "sweep finished" not in proc.stderr and "[1/1]" not in proc.stderr, proc.stderr
