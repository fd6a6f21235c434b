"""Ctrl-C and SIGTERM become a stop request that the training loop honours between two steps,
so that an interrupted run still writes its checkpoint, its summary and its W&B run."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Within `with StopRequest() as stop:`, stop.signum is the first signal received, else None."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # a second Ctrl-C: the user does not want to wait for the checkpoint
            raise KeyboardInterrupt
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
