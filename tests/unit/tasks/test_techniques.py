"""Registration is bound to the config: one apply per config, the stage's call, resume when resumable."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import pytest

from slimline.tasks import catalog, techniques
from slimline.tasks.base import Record, TechniqueConfig
from slimline.tasks.techniques import Resume, bound_technique, register_technique


def _config(stage: str = "prune", resumable: bool = False) -> type[TechniqueConfig]:
    class ToyConfig(TechniqueConfig):
        """A toy."""

        method: Literal["toy"] = "toy"

    ToyConfig.stage = stage  # type: ignore[misc]
    ToyConfig.resumable = resumable  # type: ignore[misc]
    return ToyConfig


@pytest.fixture(autouse=True)
def _forget_toys():
    before = dict(techniques.BOUND)
    yield
    techniques.BOUND.clear()
    techniques.BOUND.update(before)


def test_the_decorator_binds_apply_to_its_config() -> None:
    config = _config()

    @register_technique(config)
    def apply(cfg: TechniqueConfig, model: object, batches: object = None) -> Record:
        return {}

    found = bound_technique(apply)
    assert found is not None and found.config is config and found.name == "toy" and found.doc == "A toy."
    assert register_technique(config)(apply) is apply  # the same function again: a no-op (a re-import)


def test_a_config_registered_twice_fails_naming_the_first() -> None:
    config = _config()

    @register_technique(config)
    def apply(cfg: TechniqueConfig, model: object, batches: object = None) -> Record:
        return {}

    def other(cfg: TechniqueConfig, model: object, batches: object = None) -> Record:
        return {}

    with pytest.raises(TypeError, match=r"ToyConfig is registered already, to .*\.apply"):
        register_technique(config)(other)


def test_apply_must_take_its_stages_call() -> None:
    def prune_like(cfg: TechniqueConfig, model: object, batches: object = None) -> Record:
        return {}

    with pytest.raises(TypeError, match="not the quantize call"):
        register_technique(_config("quantize"))(prune_like)

    def quantize_like(cfg: TechniqueConfig, src: Path, dst: Path, *, device: str) -> None:
        return None

    with pytest.raises(TypeError, match=r"not the quantize call.*calibration"):
        register_technique(_config("quantize"))(quantize_like)


def test_only_a_resumable_config_registers_resume_and_then_it_must() -> None:
    def distill(cfg, student, teacher, tokenizer, texts, *, task, max_length, device, resume_from=None):
        return {}

    resume = Resume(state_file="state.pt", step=lambda folder, cfg: None)
    with pytest.raises(TypeError, match="resumable is True"):
        register_technique(_config("distill", resumable=True))(distill)
    with pytest.raises(TypeError, match="resumable is False"):
        register_technique(_config("distill"), resume=resume)(distill)

    def no_resume_from(cfg, student, teacher, tokenizer, texts, *, task, max_length, device):
        return {}

    with pytest.raises(TypeError, match="resume_from"):
        register_technique(_config("distill", resumable=True), resume=resume)(no_resume_from)
    register_technique(_config("distill", resumable=True), resume=resume)(distill)


def test_only_technique_configs_with_a_name_and_stage_bind() -> None:
    def apply(cfg: object, model: object, batches: object = None) -> Record:
        return {}

    with pytest.raises(TypeError, match="TechniqueConfig subclass"):
        register_technique(dict)(apply)  # type: ignore[arg-type]

    class Nameless(TechniqueConfig):
        stage: ClassVar = "prune"

    with pytest.raises(TypeError, match="`method` default"):
        register_technique(Nameless)(apply)


def test_the_builtin_distillation_resumes_through_its_technique() -> None:
    kd = catalog.techniques("distill")["distill"]
    assert kd.config.resumable and kd.resume is not None and kd.resume.state_file.endswith(".pt")
