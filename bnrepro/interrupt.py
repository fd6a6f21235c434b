"""Ctrl-C and SIGTERM: a stop request that the training loop honours between two steps, so that an interrupted run
still writes its checkpoint, its summary and its W&B run; anywhere else (start-up, or a second signal in the loop)
an `Interrupted` exception that ends the process at once with one line and exit code 128 + the signal's number.

Only the standard library loads here: the entry point installs `signals_raise` before torch is imported.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType

from bnrepro.errors import EXIT_SIGNAL

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A signal that ends the process now. A BaseException, as KeyboardInterrupt is, so that no `except Exception`
    swallows it while every `finally` still runs; the entry point prints `message` (or a default) and exits
    128 + signum."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        super().__init__(signum, message)
        self.signum, self.message = signum, message

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return EXIT_SIGNAL + self.signum


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise Interrupted (in the main thread; elsewhere nothing changes). SIGTERM would
    otherwise end the process without a word, between any two writes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class StopRequest:
    """Within `with StopRequest() as stop:`, stop.signum is the first signal received, else None; a second one
    raises Interrupted: the user does not want to wait for the checkpoint."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum

    def __enter__(self) -> StopRequest:
        # Python lets only the main thread install handlers; elsewhere the signals keep their meaning
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
