"""Knowledge distillation: a structurally pruned student learns to match its unpruned teacher.

Pruning heads or FFN channels is what makes a model faster on CPUs, and what costs it
fidelity. A short distillation on unlabeled text wins most of it back:
- encoders (feature-extraction) match every layer's hidden states (relative MSE) and the last
  layer's direction (cosine per token and of the pooled embedding);
- classifiers and causal LMs match the teacher's softened logits (KL).
The pure math lives in `tasks._kd`; the stage that loads and saves models is `tasks.stages.distill`.

Training is seeded: the same config, text, device and thread count give the same student.
Dropout is off (the model stays in eval mode) because the student should copy the teacher's
inference-time function, and noise would only slow that down on a few hundred steps.
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from slimline.tasks import _kd, inputs
from slimline.tasks.base import Record, TaskError, TechniqueConfig
from slimline.tasks.inputs import input_names
from slimline.tasks.runtime import cuda_usable
from slimline.tasks.techniques import Resume, register_technique


class DistillConfig(TechniqueConfig):
    """Distil each shape-changed student from the base model (set as `variants.distillation`)."""

    stage: ClassVar = "distill"
    resumable: ClassVar = True  # see `resumable` below; the plan lets a search's rungs resume it
    later_fields: ClassVar = frozenset({"stop_after"})
    method: Literal["distill"] = "distill"
    steps: int = Field(default=200, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    batch_size: int = Field(default=16, ge=1)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    temperature: float = Field(default=2.0, gt=0)
    seed: int = 0
    # Stop after this many of `steps` (a search's lower rung), on the full run's schedule and
    # batches: a later run of the same config resumes from the checkpoint and ends where an
    # uninterrupted run would. None: all steps.
    stop_after: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _stop_within(self) -> DistillConfig:
        if self.stop_after is not None and self.stop_after > self.steps:
            raise ValueError(f"stop_after ({self.stop_after}) must be at most steps ({self.steps})")
        return self

    def schedule(self) -> dict[str, Any]:
        """What a checkpoint must share with a run that resumes it: everything but stop_after."""
        data = self.to_json()
        data.pop("stop_after", None)
        return data


STATE = "distill_state.pt"  # beside the saved student of a stopped run: optimizer, schedule, losses


def _schedule_key(cfg: DistillConfig) -> str:
    # The config's version too: a bump means the same settings now train differently.
    return json.dumps({"v": cfg.version, **cfg.schedule()}, sort_keys=True)


def _read_state(folder: Path, *, lazy: bool = False) -> dict[str, Any] | None:
    path = Path(folder) / STATE
    if not path.is_file():
        return None
    try:
        # lazy (mmap): a check that only reads the schedule and step does not read the
        # optimizer state, twice the model's size, into memory.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=lazy)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError):  # cut off, or not ours
        return None
    return state if isinstance(state, dict) else None


def _unfit(state: dict[str, Any] | None, cfg: DistillConfig) -> str | None:
    """Why `state` cannot be resumed by a run of `cfg`, or None when it can."""
    if state is None:
        return f"no readable {STATE}"
    if state.get("schedule") != _schedule_key(cfg):
        return f"it is of another schedule ({state.get('config')}, not {cfg.schedule()})"
    step, end = state.get("step"), cfg.stop_after or cfg.steps
    if not isinstance(step, int) or not 0 < step < end:
        return f"it stopped at step {step}, not before this run's end ({end})"
    return None


def resumable(folder: Path, cfg: DistillConfig) -> int | None:
    """The step a run of `cfg` can resume from with the checkpoint in `folder`, or None when it
    is missing, of another schedule (any setting but stop_after differs), or not behind `cfg`."""
    state = _read_state(folder, lazy=True)
    if state is None or _unfit(state, cfg) is not None:
        return None
    return int(state["step"])


def _load_state(folder: Path, cfg: DistillConfig) -> dict[str, Any]:
    state = _read_state(folder)
    why = _unfit(state, cfg)
    if state is None or why is not None:
        raise TaskError(f"cannot resume distillation from {folder}: {why}")
    return state


def _device(requested: str) -> torch.device:
    # A GPU task trains on its GPU; without one (or without CUDA) the CPU does the work.
    return torch.device("cuda" if requested == "cuda" and cuda_usable() else "cpu")


def _batches(texts: list[str], cfg: DistillConfig) -> list[list[str]]:
    """`cfg.steps` batches drawn epoch by epoch from a seeded shuffle of the texts."""
    rng = np.random.default_rng(cfg.seed)
    order: list[int] = []
    while len(order) < cfg.steps * cfg.batch_size:
        order.extend(rng.permutation(len(texts)).tolist())
    return [
        [texts[i] for i in order[s * cfg.batch_size : (s + 1) * cfg.batch_size]] for s in range(cfg.steps)
    ]


def _loss(task: str, student: Any, teacher: Any, enc: dict[str, torch.Tensor], t: float) -> torch.Tensor:
    mask = enc["attention_mask"]
    with torch.no_grad():
        t_out = teacher(**enc, output_hidden_states=task == "feature-extraction")
    s_out = student(**enc, output_hidden_states=task == "feature-extraction")
    if task == "feature-extraction":
        kept = getattr(student.config, "slimline_layers_kept", None)  # set by depth pruning
        parts = _kd.hidden_loss(s_out.hidden_states, t_out.hidden_states, mask, kept)
        return parts["mse"] + parts["cos_token"] + parts["cos_pooled"]
    return _kd.logit_kl(s_out.logits, t_out.logits, t, mask if task == "causal-lm" else None)


@register_technique(DistillConfig, resume=Resume(state_file=STATE, step=resumable))
def distill(
    cfg: DistillConfig,
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    tokenizer: Any,
    texts: list[str],
    *,
    task: str,
    max_length: int = 128,
    device: str = "cpu",
    resume_from: Path | None = None,
) -> Record:
    """Train `student` in place to imitate `teacher` on `texts`; returns the loss curve and timings.

    `resume_from` is the output folder of a stopped run of the same schedule (see `resumable`;
    `student` must then hold that folder's weights): its optimizer, LR schedule and RNG are
    restored and its batches skipped, so the run ends where an uninterrupted one would; the
    record's loss curve covers every step from 1. A missing or unfit checkpoint is a TaskError.
    When this run stops before `cfg.steps`, the record's `_state` is the checkpoint to save
    (as `STATE` in the output folder; the stage wrapper does that and drops the key).
    """
    if not texts:
        raise TaskError(
            "distillation needs training text (data.train, or eval data beyond data.eval.samples)"
        )
    resume = _load_state(Path(resume_from), cfg) if resume_from is not None else None
    dev = _device(device)
    torch.manual_seed(cfg.seed)
    student.to(dev).eval()
    teacher.to(dev).eval().requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_fraction * cfg.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _kd.warmup_linear_decay(s, cfg.steps, warmup))
    losses: list[float] = []
    done = 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        losses, done = [float(v) for v in resume["losses"]], int(resume["step"])
        # Nothing is random while training today (eval mode, batches from their own seeded
        # generator), but a stochastic loss or dropout later must not silently break resumption.
        if resume.get("rng") is not None:
            torch.set_rng_state(resume["rng"])
        if dev.type == "cuda" and resume.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(resume["cuda_rng"], dev)
    end = cfg.stop_after or cfg.steps
    tokens = 0
    start = time.perf_counter()
    names = input_names(student, tokenizer)
    for batch in _batches(texts, cfg)[done:end]:
        enc = next(inputs.batches(tokenizer, batch, len(batch), max_length, names, kind="pt"))
        enc = {k: v.to(dev) for k, v in enc.items()}
        loss = _loss(task, student, teacher, enc, cfg.temperature)
        if not torch.isfinite(loss):
            raise TaskError(f"distillation diverged at step {len(losses) + 1} (loss {loss.item()}); lower lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        tokens += int(enc["attention_mask"].sum())
    seconds = time.perf_counter() - start
    student.to("cpu")
    tenth = max(1, len(losses) // 10)
    state = None
    if end < cfg.steps:  # a later run may continue this one: keep what it needs (not otherwise:
        # the optimizer state is twice the model)
        state = {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "losses": losses,  # raw, every step: the record's curve may be downsampled
            "step": end,
            "schedule": _schedule_key(cfg),  # what resumable compares
            "config": cfg.to_json(),  # for people and error messages
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        }
    return {
        "loss_curve": _kd.downsample(losses),
        "loss_start": float(np.mean(losses[:tenth])),
        "loss_end": float(np.mean(losses[-tenth:])),
        "steps": end,
        "schedule_steps": cfg.steps,
        "resumed_from_step": done,
        "_state": state,
        "train_texts": len(texts),
        "device": dev.type,
        "train_seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
    }


apply = distill
