"""What every stage kind shares: the run context, the call a stage receives, and its declaration.

A stage kind is data (`StageKind`): its name, how it runs, the logic version of a stage without
a config, its rough cost for scheduling, and the kinds of other stages it reads. The executor's
glue (pipelines.run.stage) looks a kind up in `slimline.tasks.stages.STAGES` and calls `run`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimline.tasks.base import Record, TaskError, read_json_or_none, write_json

log = logging.getLogger(__name__)

# The status a finished stage's record carries (the manifest contract's string; the enum lives in
# pipelines, which tasks may not import).
SUCCEEDED = "succeeded"


@dataclass
class Context:
    """Everything a stage needs besides its records: small, picklable, the same for every stage."""

    root: str  # <artifacts>/stages
    task: str
    eval_texts: list[str]
    calibration: list[str]
    labels: list[int] | None = None
    pairs: list[tuple[int, int, float]] | None = None  # (text i, text j, human rating) among eval_texts
    train_texts: list[str] = field(default_factory=list)  # distillation text, disjoint from eval_texts
    max_length: int = 128
    eval_batch: int = 16
    threads: int = 1
    device: str = "cpu"


def record_path(ctx: Context, sid: str) -> Path:
    """Where a finished stage's record lives (written last, so it marks completion)."""
    return Path(ctx.root) / f"{sid}.json"


# Paths inside the stage root are stored relative to it behind this prefix: a moved or copied
# artifact root keeps working, and a copy never reads the original's files.
IN_ROOT = "$stages/"
FILES = "_files"  # a record's inventory of its output folder: {relative path: [size, sha256]}


def _portable(value: Any, root: str) -> Any:
    if isinstance(value, str) and value.startswith(root + os.sep):
        return IN_ROOT + value[len(root) + 1 :]
    if isinstance(value, dict):
        return {k: _portable(v, root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_portable(v, root) for v in value]
    return value


def _resolved(value: Any, root: str) -> Any:
    if isinstance(value, str) and value.startswith(IN_ROOT):
        return os.path.join(root, value[len(IN_ROOT) :])
    if isinstance(value, dict):
        return {k: _resolved(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v, root) for v in value]
    return value


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def inventory(folder: Path) -> dict[str, list[Any]]:
    """{path relative to `folder`: [size, sha256]} of every file under it (none: {})."""
    if not folder.is_dir():
        return {}
    return {
        str(p.relative_to(folder)): [p.stat().st_size, _sha256(p)]
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_record(ctx: Context, sid: str, rec: Record) -> None:
    """Mark a stage finished: its record, paths relative to the root, with its files' inventory."""
    root = str(Path(ctx.root))
    data = _portable({**rec, FILES: inventory(Path(root) / sid)}, root)
    write_json(record_path(ctx, sid), data)


def _unverified(folder: Path, files: Any, mtime: float) -> str | None:
    """Why the stage folder does not match its record's inventory, or None when it does. Sizes
    are always compared; a file changed since the record was written is hashed again."""
    if not isinstance(files, dict):
        return f"its {FILES} inventory is not a JSON object"
    for rel, want in files.items():
        path = folder / rel
        if not isinstance(want, list) or len(want) != 2:
            return f"its {FILES} entry for {rel} is not [size, sha256]"
        try:
            stat = path.stat()
        except OSError:
            return f"{path} is missing"
        if stat.st_size != want[0]:
            return f"{path} has {stat.st_size} bytes, not the {want[0]} it was written with"
        if stat.st_mtime > mtime and _sha256(path) != want[1]:
            return f"{path} changed after the stage finished (its sha256 differs)"
    return None


def cached(ctx: Context, sid: str) -> Record | None:
    """The record of a finished stage, or None: missing, unreadable, of the wrong shape, or its
    output no longer what it wrote (a warning says which; the stage is then computed again)."""
    path = record_path(ctx, sid)
    rec = read_json_or_none(path, "stage record")
    if rec is None:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("status"), str):
        log.warning("stage record %s is not a stage record (JSON of another shape): computing it again", path)
        return None
    if FILES in rec:  # records of older versions have no inventory: trusted as they are
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        why = _unverified(Path(ctx.root) / sid, rec.pop(FILES), mtime)
        if why is not None:
            log.warning("stage %s: %s; computing it again", sid, why)
            return None
    rec = _resolved(rec, str(Path(ctx.root)))
    out = rec.get("path")
    if isinstance(out, str) and not os.path.exists(out):  # e.g. an absolute path of a moved root
        log.warning("stage %s: its output %s is missing; computing it again", sid, out)
        return None
    return rec


@dataclass(frozen=True)
class StageCall:
    """One stage to run: its plan entry (as a dict), its parent's record, every input, where to write."""

    stage: dict[str, Any]
    parent: Record | None
    inputs: dict[str, Record]  # parent and needed stage ids (latency: variant ids) to records
    out: Path  # <ctx.root>/<stage id>: the stage's own artifact folder
    ctx: Context

    @property
    def config(self) -> dict[str, Any]:
        """The stage's config, as JSON data."""
        return self.stage["config"]

    @property
    def src(self) -> Path:
        """The parent's artifact (a model folder or a graph)."""
        if self.parent is None:
            raise TaskError(f"a {self.stage['kind']} stage needs a parent")
        return Path(self.parent["path"])

    def needed(self, i: int = 0) -> Record:
        """The record of the stage's `i`-th need (e.g. the base model a distillation learns from)."""
        return self.inputs[self.stage["needs"][i]]


@dataclass(frozen=True)
class StageKind:
    """One kind of stage: how it runs and what the planner and scheduler need to know of it."""

    kind: str
    run: Callable[[StageCall], Record]
    doc: str  # one line: what the stage does
    # Stages without a config (they measure): bump it when what the stage computes changes, so
    # cached results of the old computation are not reused. None: the config's own version counts.
    logic_version: int | None = None
    # Rough relative cost (measured on MiniLM, 1 thread), for scheduling order only; or a function
    # of the stage's config when it depends on it (a distillation's steps).
    cost: float | Callable[[dict[str, Any]], float] = 1.0
    needs: tuple[str, ...] = ()  # kinds of the other stages it reads besides its parent

    def cost_of(self, config: dict[str, Any]) -> float:
        """The estimated cost of one stage of this kind with `config`."""
        return self.cost(config) if callable(self.cost) else float(self.cost)
