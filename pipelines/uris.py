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


# Names whose value is a secret, in a query string or an environment-style KEY=value: password,
# pwd, passwd, token, secret, api_key/apikey, access_key, key, auth, credential(s), signature, sig.
SECRET_NAME = re.compile(r"pass|pwd|token|secret|key|auth|credential|signature|^sig$", re.IGNORECASE)
_PAIR = re.compile(r"(?P<key>[^=&;?#\s]+)=(?P<value>[^&;#\s]*)")
_URI = re.compile(r"\b[a-zA-Z][\w+.-]*://[^\s'\"<>()]+")
_ENV = re.compile(r"\b(?P<key>[A-Za-z_][\w.-]*)=(?P<value>[^\s&;'\"]+)")


def _mask_pairs(text: str, pattern: re.Pattern[str]) -> str:
    def one(m: re.Match[str]) -> str:
        return f"{m['key']}=***" if SECRET_NAME.search(m["key"]) and m["value"] else m.group(0)

    return pattern.sub(one, text)


def masked(uri: str) -> str:
    """The URI with every secret in it replaced by ***: the user-info's password (or a lone user
    name, which is a token to most services) and the values of query parameters named like secrets
    (password, token, secret, key, ...). Never raises: a URI that does not parse is masked as text."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:  # e.g. an unclosed IPv6 bracket: no structure to rely on
        return _mask_pairs(re.sub(r"//[^/@\s]*@", "//***@", uri), _PAIR)
    out = uri
    if "@" in parts.netloc:  # edited as text: urlunsplit would rewrite sqlite:/// and the like
        userinfo, host = parts.netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        out = out.replace(parts.netloc, f"{user}:***@{host}" if colon else f"***@{host}", 1)
    head, mark, tail = out.partition("?")
    if not mark:
        head, mark, tail = out.partition("#")
    return head + mark + _mask_pairs(tail, _PAIR)


def alias_problem(alias: str) -> str | None:
    """Why MLflow would refuse an alias, or None: `latest` and `v<number>` name versions."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", alias):
        return "expected letters, digits, '_' or '-'"
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        return "reserved by MLflow ('latest' and v<number> refer to versions)"
    return None


def mask_secrets(text: str) -> str:
    """`text` (an error message, a log line) with the secrets of every URI in it masked (`masked`),
    and environment-style assignments of secret names (`MLFLOW_TRACKING_PASSWORD=...`) too."""
    return _mask_pairs(_URI.sub(lambda m: masked(m.group(0)), text), _ENV)
