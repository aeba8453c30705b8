"""Scheduled runs: cron fire times, deterministic tick ids, a single-flight lock, missed ticks.

A tick is one fire time of the spec's cron expression. Its id is the spec hash plus the fire
time, so a tick repeated (by a restarted scheduler, a cron that fires twice, a resubmission)
is recognised and skipped; the run it starts gets a run id derived from it, so the registry
sees the same run again and adds nothing. The clock and the sleep are injected for tests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import SpecError

log = logging.getLogger(__name__)
UTC = dt.UTC


@dataclass(frozen=True)
class Tick:
    """One fire time of a schedule."""

    id: str
    at: dt.datetime


def check_cron(expr: str, where: str = "schedule.cron") -> None:
    """Raise SpecError unless `expr` is a valid 5-field cron expression."""
    from croniter import croniter

    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise SpecError(f"{where}: not a valid 5-field cron expression (got {expr!r})")


def fire_times(expr: str, after: dt.datetime, n: int) -> list[dt.datetime]:
    """The next `n` fire times strictly after `after` (UTC)."""
    from croniter import croniter

    it = croniter(expr, after.astimezone(UTC))
    return [it.get_next(dt.datetime).astimezone(UTC) for _ in range(n)]


def last_fire(expr: str, at_or_before: dt.datetime) -> dt.datetime:
    """The latest fire time at or before the given moment."""
    from croniter import croniter

    moment = at_or_before.astimezone(UTC)
    if croniter.match(expr, moment.replace(second=0, microsecond=0)):
        return moment.replace(second=0, microsecond=0)
    return croniter(expr, moment).get_prev(dt.datetime).astimezone(UTC)


def tick_of(spec_hash: str, at: dt.datetime) -> Tick:
    """The tick for one fire time: its id is stable across processes and machines."""
    at = at.astimezone(UTC).replace(second=0, microsecond=0)
    return Tick(f"{spec_hash[:12]}-{at.strftime('%Y%m%dT%H%MZ')}", at)


class Busy(RuntimeError):
    """Another tick of this schedule is running (the single-flight lock is held)."""


@contextlib.contextmanager
def single_flight(lock_path: Path) -> Iterator[None]:
    """An exclusive, non-blocking lock across processes; Busy if another holder has it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another run of this schedule holds {lock_path}") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


class Scheduler:
    """Fires the ticks of one spec's schedule, each at most once.

    `run_tick(tick)` does the work (a local run or a cluster submission) and returns its exit
    code. Completed tick ids are kept in `state_dir/<spec hash>.json`.
    """

    def __init__(
        self,
        spec_hash: str,
        cron: str,
        missed: str,
        run_tick: Callable[[Tick], int],
        state_dir: Path,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(UTC),
        grace: dt.timedelta = dt.timedelta(minutes=1),
    ) -> None:
        check_cron(cron)
        self.spec_hash, self.cron, self.missed = spec_hash, cron, missed
        self.run_tick, self.clock, self.grace = run_tick, clock, grace
        self.state_path = state_dir / f"{spec_hash[:12]}.json"
        self.lock_path = state_dir / f"{spec_hash[:12]}.lock"

    def _state(self) -> dict:
        if self.state_path.is_file():
            return json.loads(self.state_path.read_text())
        return {"done": [], "last": None}

    def _record(self, tick: Tick, code: int) -> None:
        state = self._state()
        if code == 0 and tick.id not in state["done"]:
            state["done"] = [*state["done"], tick.id][-1000:]
        state["last"] = {"tick": tick.id, "at": tick.at.isoformat(), "exit_code": code}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_path)

    def due(self, now: dt.datetime) -> list[Tick]:
        """The ticks to fire at `now`, after the missed-tick policy.

        Only the latest fire time can be due, and only if its tick has not completed. Within
        `grace` of that time it is simply on time. Later than that (the scheduler was down, or
        the previous run overran) it was missed: `skip` drops it and waits for the next one;
        `run-once` runs it once, standing in for every fire time missed before it.
        """
        latest = tick_of(self.spec_hash, last_fire(self.cron, now))
        if latest.id in set(self._state()["done"]):
            return []
        if now - latest.at <= self.grace or self.missed == "run-once":
            return [latest]
        return []

    def fire(self, tick: Tick) -> int | None:
        """Run one tick under the lock; None when it had already completed or another run holds the lock."""
        try:
            with single_flight(self.lock_path):
                if tick.id in set(self._state()["done"]):
                    log.info("tick %s already done", tick.id)
                    return None
                code = self.run_tick(tick)
                self._record(tick, code)
                return code
        except Busy as exc:
            log.warning("tick %s not started: %s", tick.id, exc)
            return None

    def step(self) -> list[tuple[Tick, int | None]]:
        """Fire whatever is due now; returns (tick, exit code or None) for each."""
        return [(t, self.fire(t)) for t in self.due(self.clock())]

    def seconds_to_next(self) -> float:
        """How long until the next fire time."""
        now = self.clock()
        return max(0.0, (fire_times(self.cron, now, 1)[0] - now).total_seconds())
