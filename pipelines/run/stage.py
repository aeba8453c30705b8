"""Run one stage of the plan: the glue between the plan and the stage kinds of `tasks.stages`.

This is what an executor ships to a worker. It takes small records in and returns a small
record; every artifact lives under the artifact root, keyed by stage id. A stage whose record
file exists is finished: it is returned as cached without any work. What a kind does is its own
module's business (`slimline.tasks.stages.STAGES`); here are the cache, the lock and the status.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from slimline.pipelines.locks import single_flight
from slimline.pipelines.run.records import Status, failed, skipped
from slimline.tasks.base import Record, SkipVariant, TaskError
from slimline.tasks.runtime import quiet_libraries, set_torch_threads
from slimline.tasks.stages import STAGES
from slimline.tasks.stages.base import Context, StageCall, cached, record_path, write_record

# Context, cached and record_path are imported from here by executors, tests and benchmarks.
__all__ = ["Context", "cached", "record_path", "run_stage"]


def run_stage(stage: dict[str, Any], inputs: dict[str, Record], ctx: Context) -> Record:
    """Execute one stage (or return its cached record). `inputs` maps parent/needed ids to records.

    Deterministic failures come back as records with status failed/skipped rather than as
    exceptions, so an executor only ever sees exceptions for system failures (which it may retry).
    """
    sid = stage["id"]
    done = cached(ctx, sid)
    if done is not None:
        return {**done, "cached": True}
    # Two runs of one spec at once compute each stage once: the second waits, then reads the first's.
    with single_flight(Path(ctx.root) / ".locks" / f"{sid}.lock", wait=True):
        done = cached(ctx, sid)
        if done is not None:
            return {**done, "cached": True}
        _discard(Path(ctx.root) / sid)
        return _run(stage, inputs, ctx)


def _discard(folder: Path) -> None:
    """Remove a stage folder no valid record vouches for (cut off, or changed after it finished):
    outputs are written once (tasks.base.atomic_dir keeps an existing folder), so a stale one
    would otherwise outlive the recomputation."""
    if folder.exists():
        aside = folder.with_name(f".{folder.name}.stale-{os.getpid()}")
        os.replace(folder, aside)  # out of the way at once; removing a large folder takes a while
        shutil.rmtree(aside, ignore_errors=True)


def _run(stage: dict[str, Any], inputs: dict[str, Record], ctx: Context) -> Record:
    sid, kind = stage["id"], stage["kind"]
    quiet_libraries()
    set_torch_threads(ctx.threads)
    parent = inputs.get(stage["parent"]) if stage["parent"] else None
    call = StageCall(stage, parent, inputs, Path(ctx.root) / sid, ctx)
    start, wall_start = time.perf_counter(), time.time()
    try:
        rec = STAGES[kind].run(call)  # an unknown kind is a TaskError too
        rec["status"] = Status.SUCCEEDED
    except SkipVariant as exc:
        return skipped(kind, str(exc))
    except TaskError as exc:
        return failed(kind, f"{kind}: {exc}")
    rec.update(kind=kind, seconds=time.perf_counter() - start, host=socket.gethostname(), pid=os.getpid())
    rec["interval"] = [wall_start, time.time()]  # epoch seconds: how busy the workers were
    write_record(ctx, sid, rec)
    return {**rec, "cached": False}
