"""The distill stage's adapter: teacher from its need, and resuming the furthest finished earlier stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimline.tasks.base import write_json
from slimline.tasks.distillation.kd import DistillConfig
from slimline.tasks.pruning.heads import HeadsConfig
from slimline.tasks.stages.base import Context, StageCall, record_path
from slimline.tasks.stages.distill import STAGE
from slimline.tasks.stages.prune import apply as prune

SCHEDULE: dict[str, Any] = {"steps": 4, "lr": 1e-3, "batch_size": 4, "seed": 2}


def _call(ctx: Context, sid: str, src: Path, base: Path, resume: list[str], **cfg: Any) -> StageCall:
    stage = {
        "id": sid,
        "kind": "distill",
        "config": DistillConfig(**{**SCHEDULE, **cfg}).to_json(),
        "parent": "prune-x",
        "needs": ["load-x"],
        "resume": resume,
    }
    inputs = {"prune-x": {"path": str(src)}, "load-x": {"path": str(base)}}
    return StageCall(stage, inputs["prune-x"], inputs, Path(ctx.root) / sid, ctx)


def test_resumes_the_furthest_finished_stop_that_fits(tiny_model, texts, tmp_path) -> None:
    base = tiny_model("bert")
    pruned = tmp_path / "pruned"
    prune(HeadsConfig(amount=0.5), base, pruned, task="feature-extraction")
    ctx = Context(str(tmp_path), "feature-extraction", texts[:8], [], train_texts=texts[48:], max_length=32)
    stopped = STAGE.run(_call(ctx, "distill-a", pruned, base, [], stop_after=2))
    assert stopped["steps"] == 2 and stopped["resumed_from_step"] == 0
    # Only a finished stage has a record: the unfinished candidate is passed over.
    write_json(record_path(ctx, "distill-a"), {**stopped, "status": "succeeded"})
    full = STAGE.run(_call(ctx, "distill-b", pruned, base, ["distill-none", "distill-a"]))
    assert full["resumed_from_step"] == 2 and full["steps"] == 4
