"""The emitted schedules fire exactly when croniter (`--once`, `--next`) says the cron fires.

OnCalendar= values are evaluated by a small evaluator of the syntax the emitter writes (and by
`systemd-analyze calendar` where it exists); crontab text by Vixie cron's rules, including its
day-of-month / day-of-week OR that only applies when neither field starts with `*`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from collections.abc import Callable

import pytest

from slimline.pipelines.errors import SpecError
from slimline.pipelines.schedule.emit import cron_text, on_calendar
from slimline.pipelines.schedule.schedule import fire_times

UTC = dt.UTC
START = dt.datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
N = 50
CRONS = [
    "0 3 * * *",
    "0 3 * * 0-7",  # 7 is Sunday too: every day
    "0 3 1 * 1",  # the 1st OR any Monday
    "*/15 9-17 * * mon-fri",
    "0 3 * jan-mar *",
    "0 3 * JAN-MAR Mon",
    "0 3 1-5/2 * *",
    "0 3 5/10 * *",
    "0 22-2 * * 5-1",  # wrapping ranges
    "0 3 */2 * 1",  # croniter ORs here; Vixie cron would AND (its field starts with *)
    "0 3 * * 7",
    "0 3 1-31 * 1",
    "0 3 ? * 1",
    "0 0 29 2 *",
    "*/7 */5 * * *",
    "0 3 1,15 */3 sun",
    "30 2 1 * *",
    "0 3 * * 0,6",
    "0 3 31 * *",
    "0 12 13 * fri",
    "5,10-20/5,50 * * * *",
    "0 0 * * 2-4",
    "0 12 */10 feb,aug 6,0",
    "0 3 31 2 1",  # Feb 31 never comes; the Mondays of February do
    "15 4 * * */2",
    "0 0 1 * 0-6",
    "0 9-17/2 * * 1-5",
    "59 23 31 dec *",
]
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def _values(part: str, lo: int, hi: int) -> set[int]:
    """One OnCalendar= component: *, v, a..b, v/s (to the end), a..b/s, comma lists."""
    out: set[int] = set()
    for item in part.split(","):
        if item == "*":
            out |= set(range(lo, hi + 1))
            continue
        span, _, step = item.partition("/")
        a, _, b = span.partition("..")
        first = int(a)
        last = int(b) if b else (hi if step else first)
        out |= set(range(first, last + 1, int(step or 1)))
    return out


def _weekdays(part: str) -> set[int]:
    out: set[int] = set()
    for item in part.split(","):
        a, _, b = item.partition("..")
        out |= set(range(DAYS.index(a), DAYS.index(b or a) + 1))
    return out


def _calendar(value: str) -> Callable[[dt.date], list[tuple[int, int]] | None]:
    """A day -> [(hour, minute)] function for one OnCalendar= value of the emitted form."""
    m = re.fullmatch(r"(?:(\S+) )?\*-(\S+)-(\S+) (\S+):(\S+):00 UTC", value)
    assert m, value
    weekdays = _weekdays(m[1]) if m[1] else set(range(7))
    months, days = _values(m[2], 1, 12), _values(m[3], 1, 31)
    times = sorted((h, mi) for h in _values(m[4], 0, 23) for mi in _values(m[5], 0, 59))
    return lambda d: times if d.month in months and d.day in days and d.weekday() in weekdays else None


def _vixie(text: str) -> Callable[[dt.date], list[tuple[int, int]] | None]:
    """A day -> [(hour, minute)] function for crontab text, by Vixie cron's rules."""

    def values(part: str, lo: int, hi: int) -> set[int]:
        out: set[int] = set()
        for item in part.split(","):
            span, _, step = item.partition("/")
            a, _, b = (f"{lo}-{hi}" if span == "*" else span).partition("-")
            out |= set(range(int(a), int(b or a) + 1, int(step or 1)))
        return out

    minute, hour, dom, month, dow = text.split()
    assert re.fullmatch(r"[0-9*,/ -]+", text), text  # plain syntax only: every cron reads it alike
    doms, dows, months = values(dom, 1, 31), {d % 7 for d in values(dow, 0, 7)}, values(month, 1, 12)
    times = sorted((h, mi) for h in values(hour, 0, 23) for mi in values(minute, 0, 59))
    star = dom.startswith("*") or dow.startswith("*")

    def day(d: dt.date) -> list[tuple[int, int]] | None:
        by_dom, by_dow = d.day in doms, (d.weekday() + 1) % 7 in dows
        return times if d.month in months and ((by_dom and by_dow) if star else (by_dom or by_dow)) else None

    return day


def _next(days: list[Callable[[dt.date], list[tuple[int, int]] | None]], n: int) -> list[dt.datetime]:
    out: list[dt.datetime] = []
    d = START.date()
    while len(out) < n and d.year < START.year + 300:
        hits = sorted({hm for f in days for hm in (f(d) or [])})
        for h, mi in hits:
            at = dt.datetime(d.year, d.month, d.day, h, mi, tzinfo=UTC)
            if at > START and len(out) < n:
                out.append(at)
        d += dt.timedelta(days=1)
    return out


@pytest.mark.parametrize("cron", CRONS)
def test_on_calendar_fires_when_croniter_does(cron: str) -> None:
    assert _next([_calendar(v) for v in on_calendar(cron)], N) == fire_times(cron, START, N)


@pytest.mark.parametrize("cron", CRONS)
def test_crontab_text_fires_when_croniter_does(cron: str) -> None:
    assert _next([_vixie(cron_text(cron, "crontab"))], N) == fire_times(cron, START, N)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("cron", CRONS)
def test_systemd_reads_the_calendars_as_croniter(cron: str) -> None:
    got: set[dt.datetime] = set()
    for value in on_calendar(cron):
        res = subprocess.run(
            [
                "systemd-analyze",
                "calendar",
                f"--iterations={N}",
                "--base-time=2026-01-01 00:00:00 UTC",
                value,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC"},
            check=False,
        )
        assert "Normalized form" in res.stdout, res.stderr
        stamps = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", res.stdout)
        got |= {dt.datetime.fromisoformat(s).replace(tzinfo=UTC) for s in stamps}
    want = fire_times(cron, START, N)
    assert sorted(got)[:N] == [t for t in want if t.year < 2200]


def test_the_translation_is_compact_where_it_can_be() -> None:
    assert on_calendar("0 3 * * 0-7") == ["*-*-* 03:00:00 UTC"]
    assert on_calendar("0 3 1 * 1") == ["*-*-01 03:00:00 UTC", "Mon *-*-* 03:00:00 UTC"]
    assert on_calendar("0 3 * jan-mar mon-fri") == ["Mon..Fri *-01..03-* 03:00:00 UTC"]
    assert on_calendar("0 3 1-5/2 * *") == ["*-*-01..05/2 03:00:00 UTC"]
    assert cron_text("*/15 9-17 * * mon-fri", "crontab") == "*/15 9-17 * * 1-5"
    assert cron_text("0 3 */2 * 1", "crontab") == "0 3 1-31/2 * 1"  # no leading *: Vixie ORs too


@pytest.mark.parametrize(
    ("cron", "why"),
    [("0 3 L * *", "L (last day)"), ("0 3 15W * *", "W (nearest weekday)"), ("0 3 * * 1#2", "# (nth")],
)
def test_what_has_no_equivalent_is_refused(cron: str, why: str) -> None:
    for target, emit in (("systemd", on_calendar), ("crontab", lambda c: cron_text(c, "crontab"))):
        with pytest.raises(SpecError, match=re.escape(why)) as err:
            emit(cron)
        assert target in str(err.value) and "schedule.cron" in str(err.value)
