"""Configs that real schedulers run: a crontab line, a systemd service + timer, a Kubernetes CronJob.

Each fires `slimline schedule SPEC --once`, which runs the tick of the latest fire time (or does
nothing if that tick already ran), so a scheduler that fires twice cannot run a tick twice.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from .errors import SpecError

DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def _command(exe: str, spec: Path, address: str | None) -> str:
    args = [exe, "schedule", str(spec), "--once", *(["--address", address] if address else [])]
    return shlex.join(args)


def crontab(cron: str, spec: Path, workdir: Path, exe: str, address: str | None = None) -> str:
    """One crontab line (UTC), logging beside the artifacts."""
    log = shlex.quote(str(workdir / "slimline-schedule.log"))
    run = f"cd {shlex.quote(str(workdir))} && {_command(exe, spec, address)} >> {log} 2>&1"
    return f"CRON_TZ=UTC\n{cron} {run}\n"


def _field(value: str, width: int, start: int = 0) -> str:
    def one(part: str) -> str:
        step = ""
        if "/" in part:
            part, n = part.split("/", 1)
            step = f"/{n}"
            part = str(start) if part == "*" else part
        if part == "*":
            return "*"
        if not re.fullmatch(r"\d+(-\d+)?", part):
            raise SpecError(f"schedule.cron: cannot express {value!r} for systemd")
        lo, _, hi = part.partition("-")
        text = f"{int(lo):0{width}d}" + (f"..{int(hi):0{width}d}" if hi else "")
        return text + step

    return ",".join(one(p) for p in value.split(","))


def _weekdays(value: str) -> str:
    if value == "*":
        return ""
    out = []
    for part in value.split(","):
        if not re.fullmatch(r"\d(-\d)?", part):
            raise SpecError(f"schedule.cron: cannot express day-of-week {value!r} for systemd")
        lo, _, hi = part.partition("-")
        out.append(DAYS[int(lo)] + (f"..{DAYS[int(hi)]}" if hi else ""))
    return ",".join(out) + " "


def on_calendar(cron: str) -> str:
    """A 5-field cron expression as a systemd OnCalendar= value (UTC)."""
    minute, hour, dom, month, dow = cron.split()
    date = f"*-{_field(month, 2, 1)}-{_field(dom, 2, 1)}"
    return f"{_weekdays(dow)}{date} {_field(hour, 2)}:{_field(minute, 2)}:00 UTC"


def systemd(
    name: str, cron: str, spec: Path, workdir: Path, exe: str, address: str | None = None
) -> dict[str, str]:
    """`<name>.service` (one tick) and `<name>.timer` (when), keyed by file name."""
    service = f"""[Unit]
Description=slimline scheduled sweep {name}
After=network-online.target

[Service]
Type=oneshot
WorkingDirectory={workdir}
ExecStart={_command(exe, spec, address)}
"""
    timer = f"""[Unit]
Description=slimline schedule for {name} ({cron})

[Timer]
OnCalendar={on_calendar(cron)}
Persistent=true
Unit={name}.service

[Install]
WantedBy=timers.target
"""
    return {f"{name}.service": service, f"{name}.timer": timer}
