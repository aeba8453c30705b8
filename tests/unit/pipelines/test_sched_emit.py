"""Values that reach a crontab line or a unit file are refused or quoted, never a line of their own."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from slimline.pipelines.errors import SpecError
from slimline.pipelines.schedule.emit import crontab, systemd
from slimline.pipelines.schedule.schedule import check_cron

EXE = "/venv/bin/slimline"
INJECTED = "inj/x\n* * * * * id >PWNED #.yaml"
NASTY = 'my specs/100% "it\'s" $HOME \\ ; x.yaml'


def _as_cron_runs(command: str) -> tuple[str, str]:
    """What cron (Vixie, cronie) runs: `\\%` is a literal %, the first bare % ends the command."""
    out, escaped = [], False
    for i, ch in enumerate(command):
        if escaped and ch == "%":
            out[-1] = "%"
        elif not escaped and ch == "%":
            return "".join(out), command[i + 1 :]
        else:
            out.append(ch)
        escaped = ch == "\\" and not escaped
    return "".join(out), ""


def _exec_argv(value: str) -> list[str]:
    """ExecStart= as systemd reads it: words, quotes with C escapes, %% and (in arguments) $$."""
    words = []
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|(\S+)', value):
        word = re.sub(r"\\(.)", r"\1", m[1]) if m[1] is not None else m[2]
        words.append(word.replace("%%", "%"))
    return [words[0], *(w.replace("$$", "$") for w in words[1:])]


def test_a_newline_in_the_spec_path_is_refused(tmp_path: Path) -> None:
    for emit in (
        lambda: crontab("0 3 * * *", Path(INJECTED), tmp_path, EXE),
        lambda: systemd("slimline-x", "0 3 * * *", Path(INJECTED), tmp_path, EXE),
    ):
        with pytest.raises(SpecError, match="spec path: control character") as err:
            emit()
        assert "\n" not in str(err.value)


def test_control_characters_anywhere_are_refused(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    bad_dir = tmp_path / "w\nExecStartPre=touch PWNED\n"
    with pytest.raises(SpecError, match="working directory"):
        systemd("slimline-x", "0 3 * * *", spec, bad_dir, EXE)
    with pytest.raises(SpecError, match="working directory"):
        crontab("0 3 * * *", spec, bad_dir, EXE)
    with pytest.raises(SpecError, match="executable path"):
        crontab("0 3 * * *", spec, tmp_path, "/venv/bin/slim\rline")
    with pytest.raises(SpecError, match="--address"):
        systemd("slimline-x", "0 3 * * *", spec, tmp_path, EXE, "http://h:8265\tx")
    with pytest.raises(SpecError, match="unit name"):
        systemd("slimline-x\n[Service]", "0 3 * * *", spec, tmp_path, EXE)
    for cron in ("0 3 * * *\n* * * * * id", "0\t3 * * *", "0 3 * * *\x7f"):
        with pytest.raises(SpecError, match="control characters"):
            check_cron(cron)
        with pytest.raises(SpecError, match="control characters"):
            crontab(cron, spec, tmp_path, EXE)


def test_crontab_escapes_percent_and_quotes_for_the_shell(tmp_path: Path) -> None:
    workdir = tmp_path / "a dir 50%"
    text = crontab("0 3 * * *", Path(NASTY), workdir, EXE, "http://h:8265/?a=%41")
    assert text.count("\n") == 2 and text.startswith("CRON_TZ=UTC\n")
    command = text.splitlines()[1].split(" ", 5)[5]
    runs, stdin = _as_cron_runs(command)
    assert stdin == ""  # no % reached cron unescaped
    argv = shlex.split(runs)
    assert argv[:3] == ["cd", str(workdir), "&&"]
    assert argv[3:10] == [EXE, "schedule", "--once", "--address", "http://h:8265/?a=%41", "--", NASTY]
    with pytest.raises(SpecError, match="backslash before %"):
        crontab("0 3 * * *", Path("a\\%b.yaml"), tmp_path, EXE)


def test_systemd_quotes_exec_start_and_escapes_specifiers(tmp_path: Path) -> None:
    workdir = tmp_path / "w 100%"
    files = systemd("slimline-x", "0 3 1 * 1", Path(NASTY), workdir, EXE, "http://h/$x")
    service = files["slimline-x.service"].splitlines()
    assert f"WorkingDirectory={str(workdir).replace('%', '%%')}" in service
    exec_start = next(x for x in service if x.startswith("ExecStart=")).split("=", 1)[1]
    assert _exec_argv(exec_start) == [EXE, "schedule", "--once", "--address", "http://h/$x", "--", NASTY]
    timer = files["slimline-x.timer"]
    assert "OnCalendar=*-*-01 03:00:00 UTC\nOnCalendar=Mon *-*-* 03:00:00 UTC\n" in timer
    assert "AccuracySec=1s" in timer  # the default, a minute, would make `--once` see a missed tick
    for bad in (tmp_path / "trailing ", Path("relative")):
        with pytest.raises(SpecError, match="WorkingDirectory"):
            systemd("slimline-x", "0 3 * * *", Path("s.yaml"), bad, EXE)
    with pytest.raises(SpecError, match="quotes or backslashes"):
        systemd("slimline-x", "0 3 * * *", Path("s.yaml"), tmp_path, '/opt/it"s/slimline')


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_quoted_units(tmp_path: Path) -> None:
    exe = tmp_path / "bin 1%" / "slimline"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    for name, text in systemd("slimline-x", "*/15 9-17 * * 1-5", Path(NASTY), tmp_path, str(exe)).items():
        (tmp_path / name).write_text(text)
    res = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "slimline-x.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
