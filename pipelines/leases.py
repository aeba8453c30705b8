"""Stage leases: a run's shared claim on every stage it reads, from plan to publish.

A stage's compute lock (pipelines.locks) is held only while it computes; a run also reads
cached stages long after (a latency phase, the registry upload), and `gc` must not remove them
under it. So each process that runs a plan holds one lease per artifact root:
- `<stages>/.leases/<holder>.json`: the stage ids it reads, its pid and host (written atomically);
- `<stages>/.leases/<holder>.lock`: flock'ed exclusively for the lease's whole life. The kernel
  drops the lock when the process dies, however it dies: a lock gc can take is a dead lease.
A lease of another host counts while its file is younger than STALE_S (flock may not reach
across hosts on every shared file system; the holder refreshes the file as it claims more).

`gc` takes the gate (`.leases/gc.lock`) exclusively while it removes; a run takes it shared
while it writes its claim, so a stage is either claimed before gc looks, or gone before the run
looks for it (and then computed again).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from slimline.tasks.base import write_json

log = logging.getLogger(__name__)
STALE_S = 6 * 3600  # a lease of another host, untouched this long, is its dead run's
F = TypeVar("F", bound=Callable[..., Any])


def _folder(stages: Path) -> Path:
    return Path(stages) / ".leases"


@contextlib.contextmanager
def gate(stages: Path, *, exclusive: bool) -> Iterator[None]:
    """gc's side exclusively, a claim's side shared (see the module docstring)."""
    folder = _folder(stages)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "gc.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


class Lease:
    """One process's claim on stages under one artifact root."""

    def __init__(self, stages: Path) -> None:
        self.stages = Path(stages)
        folder = _folder(self.stages)
        folder.mkdir(parents=True, exist_ok=True)
        self.host, self.pid = socket.gethostname(), os.getpid()
        name = f"{self.pid}-{uuid.uuid4().hex[:8]}"
        self.data, lock = folder / f"{name}.json", folder / f"{name}.lock"
        with gate(self.stages, exclusive=False):  # gc never sees the lock file before it is held
            self._fd: int | None = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.ids: set[str] = set()

    def add(self, ids: Iterable[str]) -> None:
        """Claim more stages (the ids of a plan); rewrites the lease file."""
        new = set(ids) - self.ids
        if not new:
            return
        with gate(self.stages, exclusive=False):
            self.ids |= new
            write_json(self.data, {"pid": self.pid, "host": self.host, "stages": sorted(self.ids)})

    def release(self) -> None:
        for path in (self.data, self.data.with_suffix(".lock")):
            path.unlink(missing_ok=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# This process's lease per stage root while a `holding` block is open: None until the first claim,
# so a run refused by its checks (bad input: exit 2) leaves nothing on disk.
_active: dict[Path, Lease | None] = {}


@contextlib.contextmanager
def holding(stages: Path) -> Iterator[None]:
    """Hold this process's lease on `stages` for the block: the outermost block releases it."""
    key = Path(stages).resolve()
    if key in _active:
        yield
        return
    _active[key] = None
    try:
        yield
    finally:
        lease = _active.pop(key)
        if lease is not None:
            lease.release()


def claim(stages: Path, ids: Iterable[str]) -> None:
    """Add `ids` to this process's lease on `stages`, when a `holding` block is open for it."""
    key = Path(stages).resolve()
    if key not in _active:
        return
    lease = _active[key]
    if lease is None:
        lease = _active[key] = Lease(key)
    lease.add(ids)


def held(stages: Path) -> Lease | None:
    """This process's lease on `stages`, once a claim made it (for tests and messages)."""
    return _active.get(Path(stages).resolve())


def scoped(fn: F) -> F:
    """Run `fn(spec, ...)` holding a lease on the spec's artifact root."""

    @functools.wraps(fn)
    def wrapper(spec: Any, *args: Any, **kwargs: Any) -> Any:
        with holding(Path(spec.artifacts.path).resolve() / "stages"):
            return fn(spec, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _alive(lock: Path, info: dict[str, Any], mtime: float) -> bool:
    if info.get("host") not in (None, socket.gethostname()):
        return time.time() - mtime < STALE_S
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True  # its holder has it
    finally:
        os.close(fd)
    return False


def leased(stages: Path) -> dict[str, str]:
    """{stage id: who holds it} over the live leases; dead leases are removed. Call it inside
    `gate(exclusive=True)`."""
    out: dict[str, str] = {}
    for data in sorted(_folder(stages).glob("*.json")):
        lock = data.with_suffix(".lock")
        try:
            info = json.loads(data.read_bytes())
            mtime = data.stat().st_mtime
        except (OSError, ValueError):
            info, mtime = {}, 0.0
        if not isinstance(info, dict) or not isinstance(info.get("stages"), list):
            info = {}  # cut off or not ours: its holder (if alive) still counts, with no stages
        if not _alive(lock, info, mtime):
            log.info("lease %s: its run is gone; released", data.name)
            data.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
            continue
        who = f"the run of pid {info.get('pid')} on {info.get('host')}"
        out.update({str(s): who for s in info.get("stages", [])})
    return out
