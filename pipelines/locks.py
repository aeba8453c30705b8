"""Single flight across processes: file locks (flock) under the artifact root.

They hold across every process of one machine, and across machines that share the artifact root
on a file system with working `flock` (NFSv4, most cluster file systems).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class Busy(RuntimeError):
    """Another process holds the lock (a tick of this schedule is running, say)."""


@contextlib.contextmanager
def single_flight(lock_path: Path, wait: bool = False) -> Iterator[None]:
    """An exclusive lock across processes: Busy if another holder has it, unless `wait`."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy(f"another process holds {lock_path}") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock
