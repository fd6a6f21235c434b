"""`bnrepro-train` in a process of its own that skips the interpreter's start-up: forked from a server that has
imported torch, Hydra and bnrepro once.

A test run of the CLI spends most of its time importing torch, not training (a few seconds a process on this
CPU, over a hundred processes in the suite). The server imports once per pytest worker; each run is a fresh
fork of it, so it is still a process of its own: its own PID, working folder, environment, argv, stdout, stderr,
signal handlers and exit status, and the real `bnrepro.train.cli` that the console script calls. What a fork
cannot test is the start-up itself (what is imported when, a signal while it imports, an environment that
changes what modules read at import): such tests start a fresh interpreter (conftest's `start_cli`, and `cli`
whenever a test changes the environment).

The server never runs a torch op, so no thread pool exists to be forked; it reads one JSON request per line on
stdin and answers `{"pid": ...}` when it forks, then `{"rc": ...}` when the run ends.
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
from pathlib import Path

SERVER = Path(__file__).resolve()


class WarmCLI:
    """A client of one server process (one per pytest worker); runs one CLI command at a time."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.server = subprocess.Popen([sys.executable, str(SERVER)], env=env, cwd=cwd, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
        self.lock = threading.Lock()
        self._read(timeout=120)  # {"ready": true}: the imports are done

    def _read(self, timeout: float | None) -> dict:
        ready, _, _ = select.select([self.server.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = self.server.stdout.readline()
        if not line:
            raise RuntimeError(f"the warm CLI server ended (exit {self.server.wait()})")
        return json.loads(line)

    def run(self, args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        with self.lock, tempfile.TemporaryDirectory(prefix="warm-cli-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"argv": args, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            self.server.stdin.write(json.dumps(request) + "\n")
            self.server.stdin.flush()
            pid = self._read(timeout=60)["pid"]
            try:
                rc = self._read(timeout=timeout)["rc"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._read(timeout=60)
                raise subprocess.TimeoutExpired(args, timeout, out.read_text(), err.read_text()) from None
            return subprocess.CompletedProcess(args, rc, out.read_text(), err.read_text())

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=30)


def _serve() -> None:
    # what every CLI run imports, so that a fork starts with it: torch, Hydra and its plugins, the parts
    import torch  # noqa: F401
    from hydra.core.plugins import Plugins

    import bnrepro.data.fashion_mnist  # noqa: F401
    import bnrepro.data.mnist  # noqa: F401
    import bnrepro.models.cnn  # noqa: F401
    import bnrepro.models.mlp  # noqa: F401
    import bnrepro.probes.grad_norms  # noqa: F401
    import bnrepro.run.job  # noqa: F401
    import bnrepro.train  # noqa: F401

    Plugins.instance()  # Hydra's plugin discovery: the same scan every run would make
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_cli(request)  # never returns: the child exits as the CLI ends
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)


def _run_cli(request: dict) -> None:
    """In the forked child: become `bnrepro-train <argv>` in the request's folder and environment, and exit as it
    does (SystemExit unwinds to the interpreter's own exit, so atexit handlers and stream flushes run)."""
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
