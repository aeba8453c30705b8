"""Shared vocabulary of the technique modules: configs, records, errors, atomic outputs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

# A record is the small JSON-serialisable result of a stage; it is what crosses process boundaries.
Record = dict[str, Any]


class TaskError(Exception):
    """A deterministic per-variant failure (export error, parity breach...): record it, never retry."""


class SkipVariant(TaskError):
    """The combination cannot run here (fp16 on CPU, int4 without MatMul weights): skipped with a reason."""


class UnsupportedArchitecture(TaskError):
    """The model's architecture is not one of the families the structural passes understand."""


class StepConfig(BaseModel):
    """Frozen, versioned configuration of one technique.

    `version` is bumped whenever the same config would produce a different artifact, so that
    content-hash stage ids change with it and stale cache entries are never reused.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    version: ClassVar[int] = 1

    def to_json(self) -> dict[str, Any]:
        """The config as plain JSON data (round-trips through `model_validate`)."""
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """A stable hash of the config and its version."""
        payload = json.dumps(
            {"v": self.version, "cls": type(self).__name__, **self.to_json()}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that is renamed to `final` only if the block succeeds.

    A crash mid-stage therefore never leaves a half-written output that a later run would
    mistake for a finished stage.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (write a temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def dir_size_bytes(path: Path) -> int:
    """Bytes on disk of a file, or of every file under a directory."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def dir_digest(folder: Path | str) -> str:
    """Content hash of a folder's files (relative names and bytes), e.g. the base model's."""
    h = hashlib.sha256()
    root = Path(folder)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
