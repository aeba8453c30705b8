"""Stopping a distillation early and resuming it later ends exactly where one straight run ends."""

from __future__ import annotations

import pytest
import torch
from slimline.tasks.distill import apply
from slimline.tasks.distillation.kd import STATE, DistillConfig, resumable
from slimline.tasks.load import load_pretrained
from slimline.tasks.prune import apply as prune
from slimline.tasks.pruning.heads import HeadsConfig


def test_stop_after_is_left_out_of_the_json_unless_set() -> None:
    assert "stop_after" not in DistillConfig(steps=8).to_json()  # old stage ids stay the same
    assert DistillConfig(steps=8, stop_after=4).to_json()["stop_after"] == 4
    with pytest.raises(ValueError, match="at most steps"):
        DistillConfig(steps=8, stop_after=9)


def test_resumed_run_equals_the_straight_run(tiny_model, tmp_path, texts) -> None:
    src = tiny_model("bert", init_range=0.2)
    prune(HeadsConfig(amount=0.5), src, tmp_path / "pruned", task="feature-extraction")
    common = {"steps": 6, "lr": 1e-3, "batch_size": 4, "seed": 2}
    kw = {"task": "feature-extraction", "texts": texts[48:], "max_length": 32}
    straight = apply(DistillConfig(**common), tmp_path / "pruned", src, tmp_path / "straight", **kw)
    assert not (tmp_path / "straight" / STATE).exists()  # a finished run keeps no optimizer state
    half = DistillConfig(**common, stop_after=3)
    first = apply(half, tmp_path / "pruned", src, tmp_path / "half", **kw)
    assert first["steps"] == 3 and first["schedule_steps"] == 6 and (tmp_path / "half" / STATE).is_file()
    full = DistillConfig(**common)
    assert resumable(tmp_path / "half", full) == 3
    assert resumable(tmp_path / "half", full.model_copy(update={"lr": 2e-3})) is None  # another schedule
    assert resumable(tmp_path / "half", half) is None  # nothing left to do from there
    resumed = apply(full, tmp_path / "pruned", src, tmp_path / "resumed", resume_from=tmp_path / "half", **kw)
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 6
    assert resumed["loss_curve"][:3] == first["loss_curve"]
    assert [s for s, _ in resumed["loss_curve"]] == [s for s, _ in straight["loss_curve"]]
    assert [v for _, v in resumed["loss_curve"]] == pytest.approx(
        [v for _, v in straight["loss_curve"]], rel=1e-4
    )
    a = load_pretrained(str(tmp_path / "straight"), "feature-extraction").state_dict()
    b = load_pretrained(str(tmp_path / "resumed"), "feature-extraction").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
