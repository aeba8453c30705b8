"""Tracking-store URIs as the user gives them: which one applies, and how to show one without its secrets.

Pure policy (no MLflow here): the spec, the CLI, job submission and the MLflow adapter share it.
"""

from __future__ import annotations

import os
import re
import urllib.parse

DEFAULT_URI = "sqlite:///slimline.db"


def resolve_uri(flag: str | None, spec_uri: str | None = None) -> str:
    """--tracking-uri, else the spec's own `registry.tracking_uri`, else MLFLOW_TRACKING_URI, else SQLite."""
    return flag or spec_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def masked(uri: str) -> str:
    """The URI with the secret of its user-info (password, or a lone token) replaced by ***."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is not None:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    elif parts.username is not None:  # a token alone in the user-info is a secret too
        netloc = "***@" + parts.netloc.split("@", 1)[1]
    else:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def alias_problem(alias: str) -> str | None:
    """Why MLflow would refuse an alias, or None: `latest` and `v<number>` name versions."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", alias):
        return "expected letters, digits, '_' or '-'"
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        return "reserved by MLflow ('latest' and v<number> refer to versions)"
    return None


def mask_secrets(text: str) -> str:
    """Every `scheme://user:password@` in a message (a library's error may quote the URL) masked."""
    return re.sub(r"(\b[a-zA-Z][\w+.-]*://[^/\s:@]+:)[^@\s/]+@", r"\1***@", text)
