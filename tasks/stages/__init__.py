"""One module per stage kind: what it reads, its cost, its logic version, and how it runs.

Import name: `slimline.tasks.stages` (this folder is `tasks/stages/` in the repository).
"""

from __future__ import annotations

from slimline.tasks.base import TaskError
from slimline.tasks.stages import (
    distill,
    evaluate,
    export,
    latency,
    load,
    optimize,
    prune,
    quantize,
    reference,
)
from slimline.tasks.stages.base import StageKind


class _Table(dict[str, StageKind]):
    """A dict whose unknown key is a TaskError naming the valid kinds (a record, not a crash)."""

    def __missing__(self, kind: str) -> StageKind:
        raise TaskError(f"unknown stage kind {kind!r}: expected one of {', '.join(sorted(self))}")


# Every stage kind, in the order a variant's chain runs them. Adding a kind: one module above
# with its `STAGE`, and one line here.
STAGES: dict[str, StageKind] = _Table(
    (m.STAGE.kind, m.STAGE)
    for m in (load, prune, distill, export, optimize, reference, quantize, evaluate, latency)
)
