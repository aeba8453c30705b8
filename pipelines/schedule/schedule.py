"""Scheduled runs: cron fire times, deterministic tick ids, a single-flight lock, missed ticks.

A tick is one fire time of the spec's cron expression. Its id is the spec hash plus the fire
time, so a tick repeated (by a restarted scheduler, a cron that fires twice, a resubmission)
is recognised and skipped; the run it starts gets a run id derived from it, so the registry
sees the same run again and adds nothing. The clock and the sleep are injected for tests.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slimline.pipelines.errors import SpecError
from slimline.pipelines.locks import Busy, single_flight
from slimline.tasks.base import read_json_or_none, write_json

log = logging.getLogger(__name__)
UTC = dt.UTC


@dataclass(frozen=True)
class Tick:
    """One fire time of a schedule."""

    id: str
    at: dt.datetime


# Any of these in a value that reaches a line-based config (crontab, unit file) starts a new line
# or hides one; a cron field is only ever printable ASCII.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FIXED_START = dt.datetime(2000, 1, 1, tzinfo=UTC)


def check_cron(expr: str, where: str = "schedule.cron") -> None:
    """Raise SpecError unless `expr` is a valid 5-field cron expression that fires."""
    from croniter import CroniterBadDateError, croniter

    if CONTROL.search(expr):
        raise SpecError(f"{where}: control characters (newline, tab...) are not allowed")
    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise SpecError(f"{where}: not a valid 5-field cron expression (got {expr!r})")
    if re.search(r"(?<![a-z])r(?![a-z])", expr.lower()):  # croniter's R: a new draw in every process
        raise SpecError(f"{where}: R (random) is not allowed: every process would draw other fire times")
    try:
        croniter(expr, _FIXED_START).get_next(dt.datetime)
    except CroniterBadDateError:
        raise SpecError(f"{where}: never fires: none of its months has that day") from None


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
        # Unreadable state (a crash, a full disk) counts as none: a tick it hid reruns as the same
        # run id, which the stage cache and the registry recognise, so nothing is done twice.
        state = read_json_or_none(self.state_path, "schedule state")
        if not isinstance(state, dict) or not isinstance(state.get("done"), list):
            return {"done": [], "last": None}
        return state

    def _record(self, tick: Tick, code: int) -> None:
        state = self._state()
        if code == 0 and tick.id not in state["done"]:
            state["done"] = [*state["done"], tick.id][-1000:]
        state["last"] = {"tick": tick.id, "at": tick.at.isoformat(), "exit_code": code}
        write_json(self.state_path, state)

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
