"""Which MLflow store to use, whether it is reachable, and a client bound to it (no global state)."""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..pipelines.errors import FatalInputError

DEFAULT_URI = "sqlite:///slimline.db"


class RegistryUnreachable(FatalInputError):
    """The tracking store cannot be reached (exit 2 before a run; `registry push` later)."""


def resolve_uri(flag: str | None, spec_uri: str | None = None) -> str:
    """--tracking-uri, else the spec's own `registry.tracking_uri`, else MLFLOW_TRACKING_URI, else SQLite."""
    return flag or spec_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def masked(uri: str) -> str:
    """The URI with the password of its user-info replaced by ***, for messages and artifacts."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative to the working directory), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).resolve()


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


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise RegistryUnreachable, naming the URI, unless the store answers."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
                if resp.status != 200:
                    raise RegistryUnreachable(f"tracking server {uri} answered /health with {resp.status}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryUnreachable(f"tracking server {uri} is unreachable ({reason})") from None
        return
    db = sqlite_path(uri)
    if db is not None:
        if not db.parent.is_dir() or not os.access(db.parent, os.W_OK):
            raise RegistryUnreachable(f"tracking store {uri}: folder {db.parent} is missing or not writable")
        return
    if uri.startswith(("file:", "./", "/")) or "://" not in uri:
        raise RegistryUnreachable(
            f"tracking store {uri}: MLflow 3.13+ refuses file stores; use sqlite:///<file>.db or http(s)://"
        )


@contextlib.contextmanager
def bound(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI at `uri` for the block, then put it back.

    Some MLflow calls read only that global: log_model, and the registry resolving a
    `models:/m-...` source to its logged model. Everything else goes through explicit clients.
    """
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    current = mlflow.get_tracking_uri() if previous is None else previous
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(current)


def client(uri: str) -> Any:
    """An MlflowClient bound to `uri` for tracking and the registry alike."""
    quiet_mlflow()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)
