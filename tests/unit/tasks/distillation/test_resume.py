"""A distillation stopped early (a search's lower rung) and resumed later ends where a straight run ends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from slimline.tasks.base import TaskError
from slimline.tasks.distillation.kd import STATE, DistillConfig, resumable
from slimline.tasks.load import load_pretrained
from slimline.tasks.pruning.heads import HeadsConfig
from slimline.tasks.stages.distill import apply
from slimline.tasks.stages.prune import apply as prune

TASK = "feature-extraction"
SCHEDULE: dict[str, Any] = {"steps": 6, "lr": 1e-3, "batch_size": 4, "seed": 2}


class Runs:
    """One pruned tiny student and its teacher, and a shortcut to distil it into a folder."""

    def __init__(self, root: Path, src: Path, texts: list[str]) -> None:
        self.root, self.src, self.texts = root, src, texts
        self.pruned = root / "pruned"
        prune(HeadsConfig(amount=0.5), src, self.pruned, task=TASK)

    def __call__(self, name: str, resume_from: Path | None = None, **cfg: Any) -> dict[str, Any]:
        kd = DistillConfig(**{**SCHEDULE, **cfg})
        return apply(
            kd, self.pruned, self.src, self.root / name, task=TASK, texts=self.texts,
            max_length=32, resume_from=resume_from,
        )  # fmt: skip

    def weights(self, name: str) -> dict[str, torch.Tensor]:
        return load_pretrained(str(self.root / name), TASK).state_dict()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[..., Path], texts: list[str]) -> Runs:
    # init_range 0.2: every layer matters, so six steps really move the student
    return Runs(tmp_path_factory.mktemp("resume"), tiny_model("bert", init_range=0.2), texts[48:])


@pytest.fixture(scope="module")
def straight(runs: Runs) -> dict[str, Any]:
    return runs("straight")


@pytest.fixture(scope="module")
def stopped(runs: Runs) -> dict[str, Any]:
    return runs("stopped", stop_after=3)


def _values(rec: dict[str, Any]) -> list[float]:
    return [v for _, v in rec["loss_curve"]]


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_stop_after_leaves_old_configs_and_their_ids_alone() -> None:
    plain = DistillConfig(steps=8)
    # The JSON, hence the content-hash stage id, of a config without stop_after is as before it existed.
    assert "stop_after" not in plain.to_json()
    assert set(plain.to_json()) == {
        "method", "steps", "lr", "batch_size", "warmup_fraction", "weight_decay", "temperature", "seed",
    }  # fmt: skip
    stopped = DistillConfig(steps=8, stop_after=4)
    assert stopped.to_json()["stop_after"] == 4
    assert DistillConfig.model_validate(stopped.to_json()) == stopped
    assert stopped.digest() != plain.digest()
    assert DistillConfig(steps=8, stop_after=8).to_json()["stop_after"] == 8
    assert plain.label() == "distill(steps=8)"
    assert stopped.label() == "distill(steps=8, stop_after=4)"


def test_stop_after_must_lie_within_the_steps() -> None:
    with pytest.raises(ValidationError, match=r"stop_after \(9\) must be at most steps \(8\)"):
        DistillConfig(steps=8, stop_after=9)
    with pytest.raises(ValidationError, match="stop_after"):
        DistillConfig(steps=8, stop_after=0)


def test_a_stopped_run_keeps_a_checkpoint_and_a_finished_one_does_not(runs, straight, stopped) -> None:
    assert stopped["steps"] == 3 and stopped["schedule_steps"] == 6 and stopped["resumed_from_step"] == 0
    assert [s for s, _ in stopped["loss_curve"]] == [1, 2, 3]
    assert "_state" not in stopped and "_state" not in straight
    assert straight["steps"] == straight["schedule_steps"] == 6
    assert not (runs.root / "straight" / STATE).exists()  # the optimizer state is twice the model
    state = torch.load(runs.root / "stopped" / STATE, map_location="cpu", weights_only=True)
    assert state["step"] == 3 and state["config"]["stop_after"] == 3
    assert state["losses"] == _values(stopped)  # raw: what the record's curve is downsampled from
    assert {"optimizer", "scheduler", "rng"} <= state.keys()
    # The first steps follow the full run's schedule and batches: the same losses as the straight run.
    assert _values(stopped) == pytest.approx(_values(straight)[:3], rel=1e-6)
    # The same config stopped at `steps` keeps no checkpoint either.
    assert runs("at_end", stop_after=6)["steps"] == 6 and not (runs.root / "at_end" / STATE).exists()


def test_resumed_run_equals_the_straight_run(runs, straight, stopped) -> None:
    full = DistillConfig(**SCHEDULE)
    assert resumable(runs.root / "stopped", full) == 3
    resumed = runs("resumed", resume_from=runs.root / "stopped")
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 6 and resumed["schedule_steps"] == 6
    # One continuous curve over steps 1..6, its first half the stopped run's own.
    assert [s for s, _ in resumed["loss_curve"]] == [1, 2, 3, 4, 5, 6]
    assert resumed["loss_curve"][:3] == stopped["loss_curve"]
    assert _values(resumed) == pytest.approx(_values(straight), rel=1e-5, abs=1e-7)
    assert resumed["loss_start"] == pytest.approx(straight["loss_start"], rel=1e-5)
    assert resumed["loss_end"] == pytest.approx(straight["loss_end"], rel=1e-5)
    assert not (runs.root / "resumed" / STATE).exists()
    _same_weights(runs.weights("resumed"), runs.weights("straight"))


def test_a_resumed_run_can_stop_again_and_be_resumed(runs, straight, stopped) -> None:
    # 3 -> 5 (a checkpoint again, its losses 1..5) -> 6: still the straight run.
    again = runs("again", resume_from=runs.root / "stopped", stop_after=5)
    assert again["resumed_from_step"] == 3 and again["steps"] == 5
    assert resumable(runs.root / "again", DistillConfig(**SCHEDULE)) == 5
    last = runs("last", resume_from=runs.root / "again")
    assert last["resumed_from_step"] == 5
    assert _values(last) == pytest.approx(_values(straight), rel=1e-5, abs=1e-7)
    _same_weights(runs.weights("last"), runs.weights("straight"))


def test_checkpoints_of_another_schedule_are_refused(runs, stopped, tmp_path) -> None:
    folder = runs.root / "stopped"
    for change in ({"lr": 2e-3}, {"seed": 3}, {"batch_size": 2}, {"steps": 7}, {"temperature": 1.0}):
        assert resumable(folder, DistillConfig(**{**SCHEDULE, **change})) is None, change
    # Not behind the run asking: nothing is left to do from there.
    assert resumable(folder, DistillConfig(**SCHEDULE, stop_after=3)) is None
    assert resumable(folder, DistillConfig(**SCHEDULE, stop_after=2)) is None
    assert resumable(runs.root / "straight", DistillConfig(**SCHEDULE)) is None  # finished: no checkpoint
    assert resumable(tmp_path / "nowhere", DistillConfig(**SCHEDULE)) is None
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / STATE).write_bytes(b"not a checkpoint")
    assert resumable(tmp_path / "garbled", DistillConfig(**SCHEDULE)) is None
    # The stage is told to resume from an unfit folder: a clear TaskError, nothing written.
    with pytest.raises(TaskError, match="another schedule"):
        runs("wrong_lr", resume_from=folder, lr=2e-3)
    with pytest.raises(TaskError, match=f"no {STATE}"):
        runs("no_state", resume_from=runs.root / "straight")
    assert not (runs.root / "wrong_lr").exists() and not (runs.root / "no_state").exists()
