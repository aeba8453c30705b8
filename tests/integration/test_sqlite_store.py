"""A SQLite store is never left half-created, and a broken one is caught before any compute
(issue 25: a kill during creation left every later command failing with a raw OperationalError)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from slimline.registry import store


def test_creation_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "new.db"

    def killed(src: object, dst: object) -> None:
        raise KeyboardInterrupt  # as a kill between the migrations and the move into place

    with monkeypatch.context() as m:
        m.setattr(store.os, "replace", killed)
        with pytest.raises(KeyboardInterrupt):
            store.client(f"sqlite:///{db}")
    assert not db.exists() and list(tmp_path.iterdir()) == [tmp_path / f".{db.name}.init.lock"]
    store.client(f"sqlite:///{db}")
    assert store.sqlite_problem(db) is None
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == store.head_revision()


def test_a_half_created_store_fails_up_front_and_repairs(tmp_path: Path, cli, tiny_model, tiny_spec) -> None:
    db = tmp_path / "half.db"
    uri = f"sqlite:///{db}"
    store.client(uri)
    with sqlite3.connect(db) as con:  # what an interrupted migration leaves: tables, no head revision
        con.execute("DROP TABLE alembic_version")

    listed = cli("registry", "ls", "--tracking-uri", uri)
    assert listed.returncode == 2 and len(listed.stderr.strip().splitlines()) == 1
    assert (
        "half-created" in listed.stderr and f"slimline registry repair --tracking-uri {uri}" in listed.stderr
    )

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(tiny_model("bert"), "feature-extraction", tmp_path / "art")))
    ran = cli("run", str(spec), "--executor", "local", "--tracking-uri", uri)
    assert ran.returncode == 2 and "half-created" in ran.stderr
    assert not list((tmp_path / "art").glob("stages/*.json"))  # refused before any compute

    repaired = cli("registry", "repair", "--tracking-uri", uri)
    assert repaired.returncode == 0 and "recreated" in repaired.stdout, repaired.stderr
    assert store.sqlite_problem(db) is None and list(tmp_path.glob("half.db.*.bak"))
    assert cli("registry", "ls", "--tracking-uri", uri).returncode == 0
    again = cli("registry", "repair", "--tracking-uri", uri)
    assert again.returncode == 0 and "nothing to repair" in again.stdout


def test_a_file_that_is_not_a_store_fails_up_front(tmp_path: Path, cli) -> None:
    db = tmp_path / "junk.db"
    db.write_bytes(b"this is not a database" * 10)
    listed = cli("registry", "ls", "--tracking-uri", f"sqlite:///{db}")
    assert listed.returncode == 2 and "cannot be opened for writing" in listed.stderr


def test_read_commands_never_create_a_store(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch, unused_port: int
) -> None:
    """issue 26: `registry ls` in another folder created an empty slimline.db there and listed 0."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for args in (
        ["registry", "ls"],
        ["registry", "show", "m@champion"],
        ["registry", "pull", "m@champion", "-o", str(tmp_path / "out")],
        ["serve", "m@champion", "--port", str(unused_port)],
    ):
        res = cli(*args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert f"no MLflow store at {tmp_path / 'slimline.db'}; run from the project folder" in res.stderr
    assert not (tmp_path / "slimline.db").exists()
