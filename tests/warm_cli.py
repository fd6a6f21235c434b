"""`bnrepro-train` in a process of its own that skips the interpreter's start-up: forked from a server that has
imported torch, Hydra and bnrepro once.

A test run of the CLI spends most of its time importing torch, not training (a few seconds a process on this
CPU, over a hundred processes in the suite). The server imports once per pytest worker; each run is a fresh
fork of it, so it is still a process of its own: its own PID (and, on request, its own session and process
group), working folder, environment, argv, stdout, stderr, signal handlers and exit status, and the real
`bnrepro.train.cli` that the console script calls. What a fork cannot test is the start-up itself (what is
imported when, a signal while it imports, an environment that changes what modules read at import): such tests
start a fresh interpreter (`fresh=True` in conftest's fixtures, and any run given its own environment).

The server's only torch ops (loading the session's MNIST, which its runs then share as a basic launcher's jobs
do) run on one thread, so no thread pool exists to be forked. It reads one JSON request per line on
stdin, forks, answers `{"id": ..., "pid": ...}`, and `{"id": ..., "rc": ...}` when that child ends; several
children may run at once (a test that races two writers).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from itertools import count
from pathlib import Path

SERVER = Path(__file__).resolve()


class WarmProcess:
    """A forked `bnrepro-train`, with the part of subprocess.Popen's interface the tests use."""

    def __init__(self, args: list[str], folder: tempfile.TemporaryDirectory) -> None:
        self.args, self._folder = args, folder
        self.pid: int | None = None
        self.returncode: int | None = None
        self._started, self._ended = threading.Event(), threading.Event()

    @property
    def _out(self) -> Path:
        return Path(self._folder.name) / "stdout"

    @property
    def _err(self) -> Path:
        return Path(self._folder.name) / "stderr"

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """(stdout, stderr) once the process has ended."""
        self.wait(timeout)
        return self._out.read_text(), self._err.read_text()

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:  # until reaped, the PID is this process's (a zombie takes signals harmlessly)
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class WarmCLI:
    """The client of one server process (one per pytest worker)."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.server = subprocess.Popen([sys.executable, str(SERVER)], env=env, cwd=cwd, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
        self.lock = threading.Lock()
        self.ids = count()
        self.running: dict[int, WarmProcess] = {}
        if json.loads(self.server.stdout.readline() or "{}").get("ready") is not True:  # the imports are done
            raise RuntimeError(f"the warm CLI server did not start (exit {self.server.wait()})")
        threading.Thread(target=self._read, name="warm-cli-reader", daemon=True).start()

    def _read(self) -> None:
        for line in self.server.stdout:
            event = json.loads(line)
            proc = self.running[event["id"]]
            if "pid" in event:
                proc.pid = event["pid"]
                proc._started.set()
            else:
                proc.returncode = event["rc"]
                del self.running[event["id"]]
                proc._ended.set()

    def start(self, args: list[str], cwd: Path, env: dict[str, str], session: bool = False) -> WarmProcess:
        """Fork `bnrepro-train args` in `cwd` with `env`; session: in a session and process group of its own (as a
        terminal's foreground job, or Popen's start_new_session)."""
        proc = WarmProcess(args, tempfile.TemporaryDirectory(prefix="warm-cli-"))
        request = {"argv": args, "cwd": str(cwd), "env": env, "stdout": str(proc._out), "stderr": str(proc._err),
                   "session": session}
        with self.lock:
            request["id"] = next(self.ids)
            self.running[request["id"]] = proc
            self.server.stdin.write(json.dumps(request) + "\n")
            self.server.stdin.flush()
        if not proc._started.wait(60):
            raise RuntimeError(f"the warm CLI server did not fork (exit {self.server.poll()})")
        return proc

    def run(self, args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        """As subprocess.run(capture_output=True, text=True, timeout=timeout)."""
        proc = self.start(args, cwd, env)
        try:
            out, err = proc.communicate(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise subprocess.TimeoutExpired(args, timeout, proc._out.read_text(), proc._err.read_text()) from None
        return subprocess.CompletedProcess(args, proc.returncode, out, err)

    def close(self) -> None:
        self.server.stdin.close()  # the server ends once its children have
        self.server.wait(timeout=60)


def _serve() -> None:
    # what every CLI run imports, so that a fork starts with it: torch, Hydra and its plugins, the parts
    import torch
    from hydra.core.plugins import Plugins

    import bnrepro.data.fashion_mnist  # noqa: F401
    import bnrepro.data.mnist
    import bnrepro.models.cnn  # noqa: F401
    import bnrepro.models.mlp  # noqa: F401
    import bnrepro.probes.grad_norms  # noqa: F401
    import bnrepro.run.job  # noqa: F401
    import bnrepro.train  # noqa: F401

    Plugins.instance()  # Hydra's plugin discovery: the same scan every run would make
    # The session's MNIST, loaded as a sweep's first job loads it: a run forked from here finds it as the basic
    # launcher's later jobs do (bnrepro.data.mnist keeps the last load), instead of each reading and verifying
    # the cache again; a run with another data root or form loads its own. On one thread, so that no OpenMP pool
    # exists to be forked; torch's default is back for the runs.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    bnrepro.data.mnist.MNIST().load("cpu")
    torch.set_num_threads(threads)
    _answer({"ready": True})
    children: dict[int, int] = {}  # pid -> request id
    pending, stdin_open = b"", True
    while stdin_open or children:
        # wake for a request, or every 20 ms to reap the children that ended
        readable, _, _ = select.select([0] if stdin_open else [], [], [], 0.02 if children else None)
        if readable:
            data = os.read(0, 1 << 16)
            stdin_open = bool(data)
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = json.loads(line)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _run_cli(request)  # never returns: the child exits as the CLI ends
                children[pid] = request["id"]
                _answer({"id": request["id"], "pid": pid})
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            _answer({"id": children.pop(pid), "rc": os.waitstatus_to_exitcode(status)})


def _answer(event: dict) -> None:
    os.write(1, (json.dumps(event) + "\n").encode())


def _run_cli(request: dict) -> None:
    """In the forked child: become `bnrepro-train <argv>` in the request's folder and environment, and exit as it
    does (SystemExit unwinds to the interpreter's own exit, so atexit handlers and stream flushes run)."""
    if request["session"]:
        os.setsid()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT),
                            (2, request["stderr"], os.O_WRONLY | os.O_CREAT)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fd 0 is /dev/null now
    sys.argv = ["bnrepro-train", *request["argv"]]
    from bnrepro.train import cli

    cli()
    raise SystemExit(0)


if __name__ == "__main__":
    _serve()
