"""The scheduler with an injected clock: ticks, idempotence, the single-flight lock, missed ticks."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from slimline.pipelines.errors import SpecError
from slimline.pipelines.schedule.schedule import (
    Busy,
    Scheduler,
    check_cron,
    fire_times,
    last_fire,
    single_flight,
    tick_of,
)

UTC = dt.UTC
HASH = "0123456789abcdef"


class Clock:
    def __init__(self, at: dt.datetime) -> None:
        self.now = at

    def __call__(self) -> dt.datetime:
        return self.now


def _sched(tmp_path, clock, missed="skip", cron="0 3 * * *"):
    ran: list[str] = []

    def run_tick(tick) -> int:
        ran.append(tick.id)
        return 0

    return Scheduler(HASH, cron, missed, run_tick, tmp_path / "state", clock=clock), ran


def test_fire_times_and_tick_ids() -> None:
    start = dt.datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    times = fire_times("0 3 * * *", start, 3)
    assert [t.isoformat() for t in times] == [
        "2026-11-23T03:00:00+00:00",
        "2026-11-24T03:00:00+00:00",
        "2026-11-25T03:00:00+00:00",
    ]
    assert last_fire("0 3 * * *", times[0]) == times[0]  # a fire time is its own latest fire time
    assert last_fire("0 3 * * *", times[0] + dt.timedelta(seconds=59)) == times[0]
    assert tick_of(HASH, times[0]) == tick_of(HASH, times[0] + dt.timedelta(seconds=30))
    assert tick_of(HASH, times[0]).id == "0123456789ab-20261123T0300Z"
    for bad in ("0 3 * *", "61 3 * * *", "every day", "0 3 * * * *"):
        with pytest.raises(SpecError, match="cron"):
            check_cron(bad)


def test_a_tick_runs_once_at_its_fire_time(tmp_path) -> None:
    clock = Clock(dt.datetime(2026, 11, 23, 2, 59, tzinfo=UTC))
    sched, ran = _sched(tmp_path, clock)
    assert sched.step() == [] and ran == []  # the previous fire time is a day old: missed, skipped
    assert sched.seconds_to_next() == 60
    clock.now = dt.datetime(2026, 11, 23, 3, 0, 5, tzinfo=UTC)
    assert [code for _, code in sched.step()] == [0]
    assert sched.step() == []  # the same tick again: nothing
    # A second scheduler (a restart, or cron firing twice) sees the tick as done.
    again, ran2 = _sched(tmp_path, clock)
    assert again.step() == [] and ran2 == []
    assert ran == ["0123456789ab-20261123T0300Z"]


def test_missed_ticks_skip_or_run_once(tmp_path) -> None:
    late = dt.datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # down since before two fire times
    skip, ran_skip = _sched(tmp_path / "a", Clock(late), missed="skip")
    assert skip.step() == [] and ran_skip == []
    once, ran_once = _sched(tmp_path / "b", Clock(late), missed="run-once")
    once.step()
    once.step()
    assert ran_once == ["0123456789ab-20261125T0300Z"]  # one run stands in for every missed tick


def test_single_flight_lock(tmp_path) -> None:
    clock = Clock(dt.datetime(2026, 11, 23, 3, 0, tzinfo=UTC))
    sched, ran = _sched(tmp_path, clock)
    with single_flight(sched.lock_path):  # another process is running a tick
        with pytest.raises(Busy), single_flight(sched.lock_path):
            pass
        assert [code for _, code in sched.step()] == [None] and ran == []
    assert [code for _, code in sched.step()] == [0] and len(ran) == 1


def test_a_failed_tick_is_retried_at_the_next_step(tmp_path) -> None:
    clock = Clock(dt.datetime(2026, 11, 23, 3, 0, tzinfo=UTC))
    codes = iter([1, 0])
    sched = Scheduler(HASH, "0 3 * * *", "skip", lambda t: next(codes), tmp_path, clock=clock)
    assert [c for _, c in sched.step()] == [1]
    assert [c for _, c in sched.step()] == [0]
    assert sched.step() == []


def test_invalid_cron_is_exit_two(tmp_path, cli, tiny_spec) -> None:
    import yaml

    spec = tmp_path / "s.yaml"
    data = tiny_spec(
        tmp_path / "model", "feature-extraction", tmp_path / "a", schedule={"cron": "0 25 * * *"}
    )
    spec.write_text(yaml.safe_dump(data))
    for args in (["validate", str(spec)], ["schedule", str(spec), "--next", "3"]):
        res = cli(*args)
        assert res.returncode == 2
        line = res.stderr.strip()
        assert "\n" not in line and str(spec) in line and "schedule.cron" in line


def test_schedule_cli_next_and_emit(tmp_path, cli, tiny_spec) -> None:
    import yaml

    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            tiny_spec(tmp_path / "m", "feature-extraction", tmp_path / "a", schedule={"cron": "0 3 * * *"})
        )
    )
    nxt = cli("schedule", str(spec), "--next", "3")
    assert nxt.returncode == 0 and len(nxt.stdout.splitlines()) == 3
    assert all(line.split()[0].endswith("T03:00:00+00:00") for line in nxt.stdout.splitlines())
    k8s = cli("schedule", str(spec), "--emit", "k8s")
    docs = list(yaml.safe_load_all(k8s.stdout))
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "CronJob"}
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config["data"]["spec.yaml"] == spec.read_text()
    assert "OnCalendar=*-*-* 03:00:00 UTC" in cli("schedule", str(spec), "--emit", "systemd").stdout


def test_check_cron_refuses_control_characters_random_and_never_firing() -> None:
    for bad, why in (
        ("0 3 * * *\n* * * * * id", "control characters"),
        ("0\t3 * * *", "control characters"),
        ("R 3 * * *", "R (random)"),
        ("0 3 31 2 *", "never fires"),
        ("0 3 30 2 *", "never fires"),
        ("0 3 31 4,6,9,11 *", "never fires"),
    ):
        with pytest.raises(SpecError, match=re.escape(why)):
            check_cron(bad)
    for good in ("0 0 29 2 *", "0 3 31 2 1", "0 3 * mar fri"):  # leap days; Feb Mondays; names with r
        check_cron(good)
