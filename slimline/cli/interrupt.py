"""Ctrl-C that a run cannot lose.

SIGINT still raises KeyboardInterrupt at once, as Python's own handler does. It is also
remembered: a KeyboardInterrupt raised while Ray's core worker checks for signals inside a wait
can be dropped there (once, in CI, a sweep interrupted after its first export ran to the end and
exited 0). The progress observer then raises it again at the next stage event, so the run stops
there with its manifest written, as it does when the first one arrives.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from slimline.pipelines.plan.plan import Stage
from slimline.pipelines.report.progress import SweepProgress
from slimline.tasks.base import Record


class CtrlC:
    """A SIGINT handler for the main thread that raises KeyboardInterrupt and keeps a flag."""

    def __init__(self) -> None:
        self.pending = False
        self._previous: Any = None

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():  # signal.signal's own rule
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.pending = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise a Ctrl-C that was pressed and never reached the run (once)."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


class InterruptibleProgress(SweepProgress):
    """The progress display, which also raises a Ctrl-C the run has not seen at each stage event."""

    def __init__(self, ctrl_c: CtrlC, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ctrl_c = ctrl_c

    def started(self, stage: Stage) -> None:
        super().started(stage)
        self._ctrl_c.check()

    def finished(self, stage: Stage, record: Record) -> None:
        super().finished(stage, record)
        self._ctrl_c.check()
