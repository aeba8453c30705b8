"""Shared vocabulary of the technique modules: configs, records, errors, atomic outputs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Strict

log = logging.getLogger(__name__)
# Configs are strict (a typo like per_channel: "yes" must not become a setting), but JSON and
# YAML have no tuples: tuple fields take lists.
LAX = Strict(False)

# A record is the small JSON-serialisable result of a stage; it is what crosses process boundaries.
Record = dict[str, Any]
Task = Literal["feature-extraction", "text-classification", "causal-lm"]
TASKS: tuple[str, ...] = ("feature-extraction", "text-classification", "causal-lm")


class TaskError(Exception):
    """A deterministic per-variant failure (export error, parity breach...): record it, never retry."""


class SkipVariant(TaskError):
    """The combination cannot run here (fp16 on CPU, int4 without MatMul weights): skipped with a reason."""


class UnsupportedArchitecture(TaskError):
    """The model's architecture is not one of the families the structural passes understand."""


class StepConfig(BaseModel):
    """Frozen, versioned configuration of one stage (a technique, export, optimize, ...).

    `version` is bumped whenever the same config would produce a different artifact, so that
    content-hash stage ids change with it and stale cache entries are never reused.
    """

    # NaN or infinity in a setting is a mistake, never a value to compute with.
    # strict: "yes" is not a bool and "3" not an int; a typo must not become a setting.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)
    version: ClassVar[int] = 1
    # Settings added after the config's first stage ids were issued: left out of the JSON (and so
    # of the digest) while at their default, so every artifact made before they existed keeps its id.
    later_fields: ClassVar[frozenset[str]] = frozenset()

    def to_json(self) -> dict[str, Any]:
        """The config as plain JSON data (round-trips through `model_validate`)."""
        data = self.model_dump(mode="json")
        fields = type(self).model_fields
        for name in self.later_fields:
            if getattr(self, name) == fields[name].default:
                data.pop(name)
        return data

    def digest(self) -> str:
        """A stable hash of the config and its version."""
        payload = json.dumps(
            {"v": self.version, "cls": type(self).__name__, **self.to_json()}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class TechniqueConfig(StepConfig):
    """The config of one compression technique, with what the planner must know as class data.

    Planner, spec and executors read these capabilities; none of them dispatches on a
    technique's type. A technique module (tasks/pruning/*, tasks/quantization/*,
    tasks/distillation/*) holds one such class and its `apply`, bound to it with
    `@register_technique` (tasks/techniques.py).
    """

    method: str
    # Which plan stage applies it: "prune" (torch model in place), "distill" or "quantize" (ONNX graph).
    stage: ClassVar[Literal["prune", "distill", "quantize"]]
    # Why it needs a GPU task, or None when it runs on CPU workers too.
    needs_gpu: ClassVar[str | None] = None
    # It removes heads or channels: distillation (when enabled) recovers what this costs.
    changes_shapes: ClassVar[bool] = False
    # Fields whose values are lists: one value, never a grid axis of the spec.
    list_fields: ClassVar[frozenset[str]] = frozenset()
    # The model tasks it supports; a variant of another task is skipped with a reason.
    tasks: ClassVar[frozenset[str]] = frozenset(TASKS)
    # It trains for `steps` and may stop early (`stop_after`) and be continued from its checkpoint
    # (a search's lower rungs): its technique is registered with a `resume` check.
    resumable: ClassVar[bool] = False
    # Settings that make a valid config where the defaults alone do not (a required field): what
    # tests build every technique from. Empty when the defaults are a valid config.
    example: ClassVar[dict[str, Any]] = {}

    def needs_calibration(self) -> bool:
        """Whether `apply` reads calibration text (then it gets the run's calibration slice)."""
        return False

    def label(self) -> str:
        """A short human label: the method and the fields set away from their defaults."""
        set_fields = self.model_dump(mode="json", exclude_defaults=True)
        own = [k for k in type(self).__annotations__ if k in set_fields]  # its own fields, then shared ones
        order = own + [k for k in set_fields if k not in own]
        extras = [f"{k}={set_fields[k]}" for k in order if k != "method"]
        return f"{self.method}({', '.join(extras)})" if extras else self.method


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _fsync_tree(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that is renamed to `final` only if the block succeeds.

    A crash mid-stage therefore never leaves a half-written output that a later run would
    mistake for a finished stage. Outputs are content-addressed, so when another writer got
    there first its (identical) output is kept: a reader of `final` never sees it vanish.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        _fsync_tree(tmp)  # the stage record written next must never point at data still in cache
        if final.exists():
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: Path, text: str | bytes) -> None:
    """Write a text (or, given bytes, a binary) file atomically and durably: a uniquely named temp
    file, fsync, then rename over. A reader sees the old file or the new one, never a cut one; an
    OSError (a full or read-only disk) names `path` and leaves the old file as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # write() errors name no file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically and durably (see write_text)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def read_json_or_none(path: Path, what: str) -> Any:
    """A JSON file's content, or None when it is missing or unreadable (a warning says which):
    state a crash or a full disk corrupted is recomputed, never a reason for every later run to fail."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s %s is unreadable (%s): treating it as absent", what, path, str(exc).splitlines()[0])
        return None


def utf8_error(exc: UnicodeDecodeError) -> str:
    """One line on where a file stops being UTF-8."""
    return f"not UTF-8 text (byte {exc.object[exc.start]:#x} at offset {exc.start})"


def dir_size_bytes(path: Path) -> int:
    """Bytes on disk of a file, or of every file under a directory."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
