"""Which MLflow store to use, whether it is reachable, and a client bound to it (no global state)."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slimline.pipelines.errors import FatalInputError
from slimline.pipelines.uris import DEFAULT_URI, alias_problem, mask_secrets, masked, resolve_uri

__all__ = ["DEFAULT_URI", "alias_problem", "mask_secrets", "masked", "resolve_uri"]


class RegistryUnreachable(FatalInputError):
    """The tracking store cannot be reached (exit 2 before a run; `registry push` later)."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative to the working directory), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).resolve()


def require_store(uri: str) -> None:
    """For commands that only read: a SQLite store must exist already (reading never creates one
    where none was); FatalInputError names the absolute path looked at."""
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise FatalInputError(f"no MLflow store at {db}; run from the project folder or pass --tracking-uri")


def artifact_root(uri: str) -> str | None:
    """Where run artifacts go for a SQLite store: `mlartifacts/` beside the database file.

    Servers pick their own artifact location, so this is None for http(s) stores.
    """
    db = sqlite_path(uri)
    return (db.parent / "mlartifacts").as_uri() if db else None


def quiet_mlflow() -> None:
    """MLflow's INFO lines and progress bars say nothing about our run."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Its "View run at <url>" lines go to stdout, which belongs to `--json` output.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("mlflow", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)


# Database stores MLflow runs on, and the package that provides each SQLAlchemy driver module.
DB_SCHEMES = ("postgresql", "mysql", "mssql")
DRIVER_PACKAGES = {
    "psycopg": "'psycopg[binary]'",
    "psycopg2": "psycopg2-binary",
    "MySQLdb": "mysqlclient",
    "pymysql": "pymysql",
    "pyodbc": "pyodbc",
}


def _without_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """The URI without user-info, and a Basic auth header carrying it (urllib would take
    `user:pass@host` for the host name)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None:
        return uri, {}
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 literal
        netloc = f"[{netloc}]"
    netloc += f":{parts.port}" if parts.port else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {token}"}


def _check_http(uri: str, timeout: float) -> None:
    """The server answers /health, and /version like MLflow does (a version number, not a page)."""
    url, headers = _without_credentials(uri)
    shown = masked(uri)
    for path in ("/health", "/version"):
        try:
            req = urllib.request.Request(url.rstrip("/") + path, headers=headers)
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = resp.read(200).decode("utf-8", "replace").strip()
        except urllib.error.HTTPError as exc:
            raise RegistryUnreachable(
                f"tracking server {shown} answered {path} with HTTP {exc.code}: not an MLflow server?"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryUnreachable(f"tracking server {shown} is unreachable ({reason})") from None
        if path == "/version" and not re.fullmatch(r"\d+\.\d+[\w.+-]*", body):
            raise RegistryUnreachable(
                f"tracking server {shown}: /version is not an MLflow version ({body[:40]!r})"
            )


def _check_database(uri: str, timeout: float) -> None:
    """The SQLAlchemy driver of a database URI imports and the database answers within `timeout`
    (MLflow itself would retry for minutes, or fail mid-publish)."""
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = masked(uri)
    try:
        dialect = make_url(uri).get_dialect()
        dialect.import_dbapi()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise RegistryUnreachable(
            f"tracking store {shown}: not a database URI SQLAlchemy knows ({exc})"
        ) from None
    except ImportError as exc:
        package = DRIVER_PACKAGES.get(exc.name or "", exc.name)
        raise RegistryUnreachable(
            f"tracking store {shown}: its database driver is not installed: pip install {package}"
        ) from None
    seconds = {"connect_timeout": max(1, int(timeout))} if dialect.name in ("postgresql", "mysql") else {}
    engine = sqlalchemy.create_engine(uri, connect_args=seconds, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            pass
    except Exception as exc:  # the drivers' errors share no base class worth naming
        reason = mask_secrets(" ".join(str(getattr(exc, "orig", exc)).split()))[:200]
        raise RegistryUnreachable(f"tracking store {shown} is unreachable ({reason})") from None
    finally:
        engine.dispose()


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise RegistryUnreachable, naming the URI (password masked), unless the store can answer."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme in ("http", "https"):
        _check_http(uri, timeout)
        return
    db = sqlite_path(uri)
    if db is not None:
        if not db.parent.is_dir() or not os.access(db.parent, os.W_OK):
            raise RegistryUnreachable(f"tracking store {uri}: folder {db.parent} is missing or not writable")
        if db.exists() and not db.is_file():
            raise RegistryUnreachable(f"tracking store {uri}: {db} is a folder, not a SQLite database file")
        problem = sqlite_problem(db)
        if problem is not None:
            raise RegistryUnreachable(f"tracking store {uri}: {problem}")
        return
    if scheme in DB_SCHEMES:
        _check_database(uri, timeout)
        return
    if scheme == "databricks":
        return
    if uri.startswith(("file:", "./", "/")) or "://" not in uri:
        raise RegistryUnreachable(
            f"tracking store {masked(uri)}: MLflow 3.13+ refuses file stores; use sqlite:///<file>.db or http(s)://"
        )
    raise RegistryUnreachable(
        f"tracking store {masked(uri)}: unknown scheme {scheme!r}; expected http(s)://, sqlite:///, "
        "postgresql://, mysql://, mssql:// or databricks"
    )


@contextlib.contextmanager
def bound(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI at `uri` for the block, then put it back.

    Some MLflow calls read only that global: log_model, and the registry resolving a
    `models:/m-...` source to its logged model. Everything else goes through explicit clients.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils

    # Put back exactly what was there: the module global (None = follow $MLFLOW_TRACKING_URI)
    # and the variable itself, which set_tracking_uri also writes. Restoring get_tracking_uri()'s
    # answer instead would pin the global, so a later change of the variable would be ignored.
    old_global, old_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_global)  # type: ignore[arg-type]  # None unsets the variable
        if old_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


def _tables(con: Any) -> set[str]:
    """The table names of an open sqlite3 connection."""
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _schema(db: Path) -> tuple[set[str], str | None]:
    """(the tables of a SQLite file, its MLflow schema revision or None); sqlite3.Error when the
    file cannot be read or cannot take a write (read-only, locked, not a database)."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=30)  # a publish may hold it
    try:
        tables = _tables(con)
        row = (
            con.execute("SELECT version_num FROM alembic_version").fetchone()
            if "alembic_version" in tables
            else None
        )
        con.execute("BEGIN IMMEDIATE")  # the write lock, nothing written: the store takes writes
        con.execute("ROLLBACK")
    finally:
        con.close()
    return tables, row[0] if row else None


def head_revision() -> str:
    """The schema revision this MLflow writes and expects."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return str(_get_latest_schema_revision())


def sqlite_problem(db: Path) -> str | None:
    """Why an existing SQLite store cannot be used as it is, or None (a missing or empty file is
    fine: it is created when first used)."""
    import sqlite3

    if not db.is_file() or db.stat().st_size == 0:
        return None
    try:
        tables, found = _schema(db)
    except sqlite3.Error as exc:
        return f"{db} cannot be opened for writing ({exc})"
    head = head_revision()
    if found == head or not tables:
        return None
    state = "half-created (its creation was interrupted)" if found is None else f"at schema {found}"
    return (
        f"{db} is {state}, and this MLflow needs schema {head}; "
        f"repair it with: slimline registry repair --tracking-uri sqlite:///{db}"
    )


def _create_sqlite(db: Path) -> None:
    """Create a SQLite store under a temporary name and move it into place once MLflow's
    migrations have all run: a store killed while it is created leaves no half-migrated file."""
    import uuid

    # A name never used before: MLflow caches a store (and its open engine) per URI.
    tmp = db.with_name(f".{db.name}.creating-{uuid.uuid4().hex[:12]}")
    try:
        uri = f"sqlite:///{tmp}"
        from mlflow import MlflowClient

        c = MlflowClient(tracking_uri=uri, registry_uri=uri)
        c.search_experiments(max_results=1)  # the tracking store migrates the file to the head
        c.search_registered_models(max_results=1)
        os.replace(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)


def repair_sqlite(db: Path) -> str:
    """Bring a SQLite store to this MLflow's schema; returns what was done. A store that holds no
    run and no model (its creation was interrupted) is recreated, the old file kept beside it; one
    that holds data is migrated by MLflow after a backup copy. FatalInputError when neither applies."""
    import shutil
    import sqlite3
    import time

    if not db.is_file():
        raise FatalInputError(f"no SQLite store at {db}")
    problem = sqlite_problem(db)
    if problem is None:
        return f"{db} is at schema {head_revision()}: nothing to repair"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = _tables(con)
        held = sum(
            con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # two fixed table names
            for t in ("runs", "registered_models")
            if t in tables
        )
    except sqlite3.Error as exc:
        raise FatalInputError(f"{db}: not a SQLite database MLflow wrote ({exc})") from None
    finally:
        con.close()
    aside = db.with_name(f"{db.name}.{time.strftime('%Y%m%dT%H%M%S')}.bak")
    if held == 0:
        os.replace(db, aside)
        _create_sqlite(db)
        return f"{db} held no run or model: recreated at schema {head_revision()} (the old file is {aside})"
    shutil.copy2(db, aside)
    import sqlalchemy
    from mlflow.store.db.utils import _upgrade_db

    engine = sqlalchemy.create_engine(f"sqlite:///{db}", poolclass=sqlalchemy.pool.NullPool)
    try:
        _upgrade_db(engine)
    except Exception as exc:  # alembic and SQLAlchemy errors share no base worth naming
        raise FatalInputError(
            f"{db}: MLflow could not migrate it ({' '.join(str(exc).split())[:200]}); "
            f"a copy from before is {aside}"
        ) from None
    finally:
        engine.dispose()
    return f"{db} migrated to schema {head_revision()} (a copy from before is {aside})"


def client(uri: str) -> Any:
    """An MlflowClient bound to `uri` for tracking and the registry alike."""
    quiet_mlflow()
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if db is None:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    # MLflow creates a SQLite store's tables when a client or the fluent API first touches it;
    # two processes doing that at once (two runs of one spec) collide on CREATE TABLE. One
    # initialises every store of the file (the fluent API's too), the other waits.
    from slimline.pipelines.locks import single_flight

    with single_flight(db.with_name(f".{db.name}.init.lock"), wait=True):
        if not db.exists():
            _create_sqlite(db)
        c = MlflowClient(tracking_uri=uri, registry_uri=uri)
        c.search_experiments(max_results=1)
        c.search_registered_models(max_results=1)
        with bound(uri):
            import mlflow

            mlflow.search_experiments(max_results=1)
    return c
