"""Statuses, and the records of stages and variants that did not succeed: one place for both."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from slimline.tasks.base import Record


class Status(StrEnum):
    """Where a stage or a variant stands. Values are the strings the manifest contract uses."""

    PLANNED = "planned"
    SUCCEEDED = "succeeded"
    CACHED = "cached"  # a variant whose every compute stage came from the cache
    FAILED = "failed"
    SKIPPED = "skipped"


# A variant that produced a model, computed now or found in the cache.
DONE = (Status.SUCCEEDED, Status.CACHED)


def failed(kind: str, reason: str) -> Record:
    """The record of a stage that failed (deterministically or not): the sweep goes on without it."""
    return {"status": Status.FAILED, "reason": reason, "kind": kind}


def skipped(kind: str, reason: str) -> Record:
    """The record of a stage that cannot run here (e.g. fp16 without a GPU)."""
    return {"status": Status.SKIPPED, "reason": reason, "kind": kind}


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics that are numbers (lists such as CIs, and flags, left out), as floats."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def succeeded(record: Record) -> bool:
    """Whether a stage record says the stage produced its output."""
    return record.get("status") == Status.SUCCEEDED


class RunStatus(StrEnum):
    """The outcome of a whole run (the manifest's `status`)."""

    SUCCEEDED = "succeeded"  # everything ran (skips with a reason included)
    PARTIAL = "partial"  # some variants failed
    FAILED = "failed"  # no baseline, or no variant at all


# Run and tick ids become folder names under the artifact root: one safe path segment, no "..".
RUN_ID = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,119}")
