"""`slimline schedule`: one-line exit 2 for what cannot be emitted, tick failures in the exit code,
and a foreground scheduler that outlives a failing tick."""

from __future__ import annotations

import subprocess
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from slimline.cli import schedule as cli_schedule

Cli = Callable[..., subprocess.CompletedProcess]


def _spec(tmp_path: Path, tiny_spec: Any, cron: str, name: str = "s.yaml", **extra: Any) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = tiny_spec(tmp_path / "m", "feature-extraction", tmp_path / "a", schedule={"cron": cron, **extra})
    path.write_text(yaml.safe_dump(data))
    return path


def _one_line_exit_2(res: subprocess.CompletedProcess, *parts: str) -> None:
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in line
    for part in parts:
        assert part in line


def test_an_injected_spec_path_is_exit_2(tmp_path: Path, cli: Cli, tiny_spec: Any) -> None:
    spec = _spec(tmp_path, tiny_spec, "0 3 * * *", "inj/x\n* * * * * id >PWNED #.yaml")
    for kind in ("crontab", "systemd"):
        res = cli("schedule", str(spec), "--emit", kind)
        _one_line_exit_2(res, "spec path", "control character")
        assert "PWNED" not in res.stdout


def test_an_injected_working_directory_is_exit_2(
    tmp_path: Path, cli: Cli, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path, tiny_spec, "0 3 * * *")
    workdir = tmp_path / "w\nExecStartPre=touch PWNED\n"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    _one_line_exit_2(cli("schedule", str(spec), "--emit", "systemd"), "working directory")


def test_cron_that_no_scheduler_can_express_is_exit_2(tmp_path: Path, cli: Cli, tiny_spec: Any) -> None:
    spec = _spec(tmp_path, tiny_spec, "0 3 L * *")
    for kind in ("crontab", "systemd", "k8s"):
        _one_line_exit_2(cli("schedule", str(spec), "--emit", kind), "schedule.cron", "L (last day)")


def test_systemd_emission_of_names_and_either_day(tmp_path: Path, cli: Cli, tiny_spec: Any) -> None:
    spec = _spec(tmp_path, tiny_spec, "0 3 1 * mon-fri")
    res = cli("schedule", str(spec), "--emit", "systemd")
    assert res.returncode == 0, res.stderr
    assert "OnCalendar=*-*-01 03:00:00 UTC\nOnCalendar=Mon..Fri *-*-* 03:00:00 UTC\n" in res.stdout


@pytest.mark.parametrize(
    ("cron", "why"),
    [
        ("0 3 31 2 *", "never fires"),
        ("0 3 * * *\n", "control char"),
        ("0 3 30 2 *", "never fires"),
        ("R 3 * * *", "R (random"),
    ],
)
def test_bad_crons_are_exit_2_at_validation(
    tmp_path: Path, cli: Cli, tiny_spec: Any, cron: str, why: str
) -> None:
    spec = _spec(tmp_path, tiny_spec, cron)
    for args in (["validate", str(spec)], ["schedule", str(spec), "--next", "3"]):
        _one_line_exit_2(cli(*args), str(spec), "schedule.cron", why)


def _fake_run(codes: list[int | Exception], calls: list[list[str]]) -> types.SimpleNamespace:
    def run(argv: list[str], check: bool = False) -> subprocess.CompletedProcess:
        calls.append(argv)
        code = codes.pop(0)
        if isinstance(code, Exception):
            raise code
        return subprocess.CompletedProcess(argv, code)

    return types.SimpleNamespace(run=run)


def test_once_exits_with_the_failed_ticks_code(
    tmp_path: Path, cli: Cli, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path, tiny_spec, "* * * * *", missed="run-once")
    calls: list[list[str]] = []
    monkeypatch.setattr(cli_schedule, "subprocess", _fake_run([3, 0], calls))
    res = cli("schedule", str(spec), "--once")
    assert res.returncode == 3 and "exit 3" in res.stderr
    assert calls[0][1:3] == ["run", str(spec)] and calls[0][3] == "--tick-id"
    again = cli("schedule", str(spec), "--once")  # the failed tick is not done: it runs again
    assert again.returncode == 0 and len(calls) == 2
    assert cli("schedule", str(spec), "--once").returncode == 0 and len(calls) == 2  # done: nothing


def test_once_turns_a_tick_error_into_one_line_and_exit_1(
    tmp_path: Path, cli: Cli, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path, tiny_spec, "* * * * *", missed="run-once")
    monkeypatch.setattr(cli_schedule, "subprocess", _fake_run([OSError("dashboard\ndown")], []))
    res = cli("schedule", str(spec), "--once")
    assert res.returncode == 1
    errors = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert errors == [errors[0]] and "OSError: dashboard down" in errors[0]


def test_the_foreground_scheduler_outlives_a_failing_tick(
    tmp_path: Path, cli: Cli, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path, tiny_spec, "* * * * *", missed="run-once")
    calls: list[list[str]] = []
    monkeypatch.setattr(cli_schedule, "subprocess", _fake_run([RuntimeError("dashboard 503"), 0], calls))
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_schedule, "time", types.SimpleNamespace(sleep=sleep))
    state = tmp_path / "a" / "schedule"
    res = cli("schedule", str(spec))
    assert res.returncode == 130 and len(calls) == 2  # retried at the next step, then done
    assert "error: tick " in res.stderr and "RuntimeError: dashboard 503" in res.stderr
    assert state.is_dir()


def test_an_unreadable_state_is_treated_as_none(
    tmp_path: Path, cli: Cli, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """State cut short by a crash: the tick it hid runs again (same tick id, so a no-op downstream)."""
    spec = _spec(tmp_path, tiny_spec, "* * * * *", missed="run-once")
    states = tmp_path / "a" / "schedule"
    states.mkdir(parents=True)
    calls: list[list[str]] = []
    monkeypatch.setattr(cli_schedule, "subprocess", _fake_run([0], calls))
    from slimline.pipelines.spec.spec import load_spec

    (states / f"{load_spec(spec).digest()[:12]}.json").write_text("{not json")
    res = cli("schedule", str(spec), "--once")
    assert res.returncode == 0 and len(calls) == 1, res.stderr
    assert cli("schedule", str(spec), "--once").returncode == 0 and len(calls) == 1  # recorded now


def test_k8s_emission_keeps_the_password_out(tmp_path: Path, cli: Cli, tiny_spec: Any) -> None:
    spec = tmp_path / "s.yaml"
    data = tiny_spec(tmp_path / "m", "feature-extraction", tmp_path / "a", schedule={"cron": "0 3 * * 0-7"})
    data["name"] = "Nightly_MiniLM.v2"
    data["registry"] = {"tracking_uri": "https://ci:s3cret@mlflow.example:5000"}
    spec.write_text(yaml.safe_dump(data))
    res = cli("schedule", str(spec), "--emit", "k8s")
    assert res.returncode == 0, res.stderr
    assert "s3cret" not in res.stdout and "https://ci:***@mlflow.example:5000" in res.stdout
    assert "kubectl create secret generic slimline-nightly-minilm-v2-" in res.stdout
    docs = list(yaml.safe_load_all(res.stdout))
    cron = next(d for d in docs if d["kind"] == "CronJob")
    assert cron["spec"]["schedule"] == "0 3 * * *"  # 0-7 is every day, written so every cron reads it alike
    assert cron["metadata"]["name"].startswith("slimline-nightly-minilm-v2-")
