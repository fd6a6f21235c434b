"""Launcher workers die with the process that launched them, whatever ends it (SIGKILL included).

A worker learns of its launcher's end as SIGTERM, which bnrepro treats as any SIGTERM: a training run checkpoints,
records `interrupted` and exits; an idle worker just exits. So a killed sweep leaves neither orphans training on
nor idle workers holding their memory. The kernel delivers it to direct children (PR_SET_PDEATHSIG); a job process
further down (submitit_local's, under its job controller) waits on the launcher's pidfd instead.

Only the standard library loads here.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import sys
import threading
import time

LAUNCHER_ENV = "BNREPRO_LAUNCHER"  # "<host> <pid>" of the `bnrepro-train` process that launched this one's sweep
PR_SET_PDEATHSIG = 1
_following = False


def mark_launcher() -> None:
    """Let the job processes this process starts know it as their launcher (unless it is a job process itself)."""
    os.environ.setdefault(LAUNCHER_ENV, f"{socket.gethostname()} {os.getpid()}")


def launcher_pid() -> int | None:
    """The launcher's PID when it runs on this host, else None."""
    host, _, pid = os.environ.get(LAUNCHER_ENV, "").partition(" ")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


def die_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """Have the kernel send signum to this process when its parent (PID `parent`) ends; now, if it already has."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the request was in place: re-parented already
        os.kill(os.getpid(), signum)


def follow_launcher(signum: int = signal.SIGTERM) -> None:
    """In a job process below its launcher (not its direct child, which die_with_parent covers): send signum to
    this process when the launcher ends. Once per process; nothing elsewhere."""
    global _following
    pid = launcher_pid()
    if _following or pid is None or pid in (os.getpid(), os.getppid()):
        return
    _following = True
    threading.Thread(target=_wait_for_end, args=(pid, signum), name="bnrepro-follow-launcher", daemon=True).start()


def _wait_for_end(pid: int, signum: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        fd = None
    except (AttributeError, OSError):  # no pidfd (Python < 3.9, Linux < 5.3): look once a second
        while _alive(pid):
            time.sleep(1.0)
        fd = None
    if fd is not None:
        select.select([fd], [], [])  # readable once the process has ended
        os.close(fd)
    os.kill(os.getpid(), signum)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
