"""Configs that real schedulers run: a crontab line, a systemd service + timer (Kubernetes: cluster/kuberay).

Each fires `slimline schedule SPEC --once`, which runs the tick of the latest fire time (or does
nothing if that tick already ran), so a scheduler that fires twice cannot run a tick twice.

The cron is rewritten from croniter's own reading of it (`fields`), so every scheduler fires at
exactly the times `--once` and `--next` compute. Both formats are line-based: a value with a
control character could start a line of its own, so it is refused; every other value is quoted
by the rules of its format, or refused where the format has no way to write it.
"""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

from slimline.pipelines.errors import SpecError
from slimline.pipelines.schedule.schedule import CONTROL, check_cron

Field = list[int] | None  # None: the field is `*`
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
NAMES = {3: MONTHS, 4: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]}
WHY = {"l": "L (last day)", "w": "W (nearest weekday)", "#": "# (nth weekday of the month)"}
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
SYSTEMD_BARE = re.compile(r"[A-Za-z0-9_./:@=+,-]+")
UNIT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


def plain(value: str, what: str) -> str:
    """`value` if a line-based config can hold it: no control characters, valid UTF-8."""
    bad = CONTROL.search(value)
    if bad:
        raise SpecError(
            f"{what}: control character {bad.group()!r} cannot go into a scheduler config: {value!r}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SpecError(f"{what}: not valid UTF-8, cannot go into a scheduler config: {value!r}") from None
    return value


def fields(cron: str, target: str) -> list[Field]:
    """The five fields as croniter reads them; SpecError for syntax `target` has no equivalent of."""
    from croniter import croniter

    check_cron(cron)
    for i, part in enumerate(cron.split()):
        for word in re.findall(r"[A-Za-z]+|#", part):
            if word.lower() not in NAMES.get(i, []):
                why = WHY.get(word.lower(), repr(word))
                raise SpecError(f"schedule.cron: {target} has no equivalent of {why} (in {cron!r})")
    expanded, _ = croniter.expand(cron)
    return [None if f == ["*"] else sorted(int(v) for v in f) for f in expanded]


def _runs(values: list[int]) -> list[tuple[int, int, int]]:
    """(first, last, 1) for each run of consecutive values."""
    runs: list[tuple[int, int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v, 1)
        else:
            runs.append((v, v, 1))
    return runs


def _pieces(values: list[int]) -> list[tuple[int, int, int]]:
    """(first, last, step) pieces that cover exactly `values`: one stepped range, else runs."""
    steps = {b - a for a, b in itertools.pairwise(values)}
    if len(values) >= 3 and len(steps) == 1 and steps != {1}:
        return [(values[0], values[-1], steps.pop())]
    return _runs(values)


def cron_text(cron: str, target: str) -> str:
    """The cron in plain Vixie-cron syntax (numbers, ranges, lists, steps), meaning what croniter does.

    Vixie cron ORs day-of-month and day-of-week only when neither field starts with `*`; croniter
    (and Kubernetes) whenever neither is all days, `*/2` included. Writing a restricted field as
    numbers makes them agree.
    """

    def text(values: Field, lo: int, hi: int, star_ok: bool) -> str:
        if values is None:
            return "*"
        pieces = _pieces(values)
        if star_ok and len(pieces) == 1 and pieces[0][0] == lo and pieces[0][1] + pieces[0][2] > hi > lo:
            return f"*/{pieces[0][2]}"  # not for the day fields, where a leading * changes the OR
        return ",".join(f"{a}-{b}/{s}" if s > 1 else f"{a}-{b}" if b > a else f"{a}" for a, b, s in pieces)

    bounds = [(0, 59, True), (0, 23, True), (1, 31, False), (1, 12, True), (0, 6, False)]
    return " ".join(text(f, *b) for f, b in zip(fields(cron, target), bounds, strict=True))


def _calendar_part(values: Field, hi: int) -> str:
    if values is None:
        return "*"
    out = []
    for a, b, s in _pieces(values):
        if s > 1:  # systemd's a/s runs to the end of the field; a..b/s stops at b
            out.append(f"{a:02d}/{s}" if b + s > hi else f"{a:02d}..{b:02d}/{s}")
        else:
            out.append(f"{a:02d}..{b:02d}" if b > a + 1 else ",".join(f"{v:02d}" for v in range(a, b + 1)))
    return ",".join(out)


def _weekdays(values: list[int]) -> str:
    monday_first = sorted({(d + 6) % 7 for d in values})  # systemd's ranges run Mon..Sun
    if len(monday_first) == 7:
        return ""
    runs = _runs(monday_first)
    return ",".join(f"{DAYS[a]}..{DAYS[b]}" if b > a + 1 else ",".join(DAYS[a : b + 1]) for a, b, _ in runs)


def on_calendar(cron: str) -> list[str]:
    """OnCalendar= values (UTC) whose union is exactly the cron's fire times.

    Cron ORs day-of-month and day-of-week when both are restricted (`0 3 1 * 1`: the 1st, and
    every Monday); the parts of one OnCalendar= value are ANDed, so that takes two values.
    """
    minute, hour, dom, month, dow = fields(cron, "systemd")
    clock = f"{_calendar_part(hour, 23)}:{_calendar_part(minute, 59)}:00 UTC"
    months = _calendar_part(month, 12)
    by_date = f"*-{months}-{_calendar_part(dom, 31)} {clock}"
    if dow is None:
        return [by_date]
    days = _weekdays(dow)
    by_weekday = f"{days} *-{months}-* {clock}" if days else f"*-{months}-* {clock}"
    return [by_weekday] if dom is None else [by_date, by_weekday]


def _args(exe: str, spec: Path, address: str | None) -> list[str]:
    checked = {"executable path": exe, "spec path": str(spec)} | ({"--address": address} if address else {})
    for what, value in checked.items():
        plain(value, what)
    if not Path(exe).is_absolute():
        raise SpecError(f"executable path: must be absolute for a scheduler (got {exe!r})")
    # `--` first: a spec path that starts with "-" is still the path.
    return [exe, "schedule", "--once", *(["--address", address] if address else []), "--", str(spec)]


def crontab(cron: str, spec: Path, workdir: Path, exe: str, address: str | None = None) -> str:
    """One crontab line (UTC), logging beside the artifacts.

    Cron turns an unescaped % into a newline (what follows becomes stdin), so each % is written
    \\%; cron keeps every other backslash, so a backslash right before a % cannot be written.
    """
    args = _args(exe, spec, address)
    wd = plain(str(workdir), "working directory")
    if any("\\%" in a for a in [*args, wd]):
        raise SpecError(f"a crontab line cannot hold a backslash before % (in {[*args, wd]!r})")
    log = shlex.quote(str(workdir / "slimline-schedule.log"))
    run = f"cd {shlex.quote(wd)} && {shlex.join(args)} >> {log} 2>&1".replace("%", "\\%")
    return f"CRON_TZ=UTC\n{cron_text(cron, 'crontab')} {run}\n"


def _specifiers(text: str) -> str:
    return text.replace("%", "%%")  # systemd expands %x in most values


def _quoted(word: str) -> str:
    """A bare word, or one in double quotes, where systemd reads C escapes."""
    if SYSTEMD_BARE.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _exec_start(args: list[str]) -> str:
    """ExecStart=: %% is a literal %, and in arguments $$ a literal $ (systemd expands $VAR there)."""
    exe, *rest = args
    if set(exe) & set("\"'\\"):
        raise SpecError(f"executable path: systemd refuses quotes or backslashes in it (got {exe!r})")
    return " ".join([_quoted(_specifiers(exe)), *(_quoted(_specifiers(a).replace("$", "$$")) for a in rest)])


def _working_directory(workdir: Path) -> str:
    """WorkingDirectory= takes its value as it is (no quotes, no escapes): refuse what it would misread."""
    text = plain(str(workdir), "working directory")
    if not workdir.is_absolute() or text != text.strip() or text.endswith("\\"):
        raise SpecError(
            "working directory: systemd's WorkingDirectory= needs an absolute path without"
            f" leading or trailing blanks or a trailing backslash (got {text!r})"
        )
    return _specifiers(text)


def systemd(
    name: str, cron: str, spec: Path, workdir: Path, exe: str, address: str | None = None
) -> dict[str, str]:
    """`<name>.service` (one tick) and `<name>.timer` (when), keyed by file name."""
    if not UNIT_NAME.fullmatch(plain(name, "unit name")):
        raise SpecError(f"name: not a systemd unit name (letters, digits, _ . : -): {name!r}")
    calendars = "".join(f"OnCalendar={c}\n" for c in on_calendar(cron))
    service = f"""[Unit]
Description=slimline scheduled sweep {_specifiers(name)}
After=network-online.target

[Service]
Type=oneshot
WorkingDirectory={_working_directory(workdir)}
ExecStart={_exec_start(_args(exe, spec, address))}
"""
    # AccuracySec: by default a timer may fire up to a minute late, and `--once` counts a tick
    # more than a minute late as missed.
    timer = f"""[Unit]
Description=slimline schedule for {_specifiers(name)} ({_specifiers(" ".join(cron.split()))})

[Timer]
{calendars}AccuracySec=1s
Persistent=true
Unit={name}.service

[Install]
WantedBy=timers.target
"""
    return {f"{name}.service": service, f"{name}.timer": timer}
