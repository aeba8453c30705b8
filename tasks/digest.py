"""Content digests of model sources: what a load stage's id hashes, so edited weights are new inputs.

Hashing a multi-GB checkpoint on every run would dominate a cached run, so each file's digest is
cached by (path, size, modification time): a file is read again only when one of those changes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

from slimline.tasks.base import package_version, write_json
from slimline.tasks.load import resolve_source


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: Path, cache_file: Path | None = None) -> str:
    """Hash of one file's name and bytes (cached like folder_digest's)."""
    return folder_digest(Path(path).parent, cache_file, only=Path(path).name)


def folder_digest(folder: Path, cache_file: Path | None = None, only: str | None = None) -> str:
    """Hash of a folder's files (relative names and bytes); file digests cached in `cache_file`."""
    root = Path(folder).resolve()
    cache: dict[str, Any] = {}
    if cache_file is not None and cache_file.is_file():
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):  # a torn write from a killed run: start the cache again
            cache = {}
        if not isinstance(cache, dict):  # valid JSON of another shape: the same
            cache = {}
    h = hashlib.sha256()
    changed = False
    files = [root / only] if only else sorted(p for p in root.rglob("*") if p.is_file())
    for f in files:
        st = f.stat()
        key, stamp = str(f), [st.st_size, st.st_mtime_ns]
        entry = cache.get(key)
        if (
            not isinstance(entry, dict)
            or entry.get("stamp") != stamp
            or not isinstance(entry.get("sha256"), str)
        ):
            entry = {"stamp": stamp, "sha256": _file_sha256(f)}
            cache[key], changed = entry, True
        h.update(f"{f.relative_to(root)}\0{entry['sha256']}\n".encode())
    if cache_file is not None and changed:
        write_json(cache_file, cache)
    return h.hexdigest()[:16]


def _distribution_of(module: str) -> str | None:
    names = importlib.metadata.packages_distributions().get(module) or []
    return names[0] if names else None


def source_digest(source: str, cache_file: Path | None = None) -> str:
    """The content digest of a model source: its files (and, for `package:`, the package version).

    A Hugging Face id that is not a local folder cannot be read offline: its digest is its name,
    so a new upload under the same id is not noticed (pin a local copy to be content-addressed).
    """
    resolved = resolve_source(source)
    if os.path.isfile(resolved):  # a GGUF file: its bytes
        digest = file_digest(Path(resolved), cache_file)
    elif not os.path.isdir(resolved):
        return "hub-" + hashlib.sha256(resolved.encode()).hexdigest()[:12]
    else:
        digest = folder_digest(Path(resolved), cache_file)
    if source.startswith("package:"):
        module = source[len("package:") :].partition("/")[0]
        dist = _distribution_of(module)
        version = package_version(dist) if dist else None
        digest = hashlib.sha256(f"{digest}|{dist}=={version}".encode()).hexdigest()[:16]
    return digest
