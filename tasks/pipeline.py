"""The model's own output contract: what its users get from it, beyond its last hidden state.

A sentence-transformers folder declares its pooling (`1_Pooling/config.json`), whether a
Normalize module follows, and `max_seq_length`; a classifier declares `id2label` and
`problem_type` (multi-label means sigmoid scores); every model has a longest input its position
embeddings can take. slimline reads that pipeline once, when the load stage reads the model
(`read_pipeline`), keeps it in the model folder's config (pruning and distillation carry it) and
in every graph folder's meta.json (export writes it, later graph stages copy it). Evaluation,
`slimline.load(...)` and the served endpoints all reduce outputs through it (`OutputPipeline.pool`,
`.scores`), so the metrics judge the output the model's users consume.

The files are read as JSON: no sentence-transformers import. A graph folder from before the
pipeline existed means mean pooling without normalization (what slimline computed then).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from slimline.tasks.base import Record

log = logging.getLogger(__name__)

PoolMode = Literal["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
# sentence-transformers' legacy boolean keys, in the order it concatenates the modes they enable.
_LEGACY_KEYS: dict[str, PoolMode] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Modules that change nothing at inference: no warning that they are not applied.
_NO_OPS = {"Transformer", "Pooling", "Normalize", "Dropout"}

CONFIG_KEY = "slimline_pipeline"  # in a model folder's config.json (carried through prune and distill)
META_KEY = "pipeline"  # in a graph folder's meta.json
# Families whose position ids start after the padding index (transformers' RoBERTa
# `create_position_ids_from_input_ids`): pad_token_id + 1 positions are never a token's.
_POSITION_OFFSET_TYPES = frozenset(
    {
        "roberta",
        "roberta-prelayernorm",
        "xlm-roberta",
        "xlm-roberta-xl",
        "camembert",
        "data2vec-text",
        "longformer",
        "ibert",
        "mpnet",
        "markuplm",
        "luke",
        "xmod",
        "esm",
    }
)
_UNLIMITED = 10**9  # tokenizers say "no limit" with int(1e30)
FALLBACK_MAX_LENGTH = 128  # a graph folder that predates the pipeline: what slimline used then


class OutputPipeline(BaseModel):
    """How a model's raw outputs become what its users get (JSON-serialisable; see module doc)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    source: Literal["sentence-transformers", "transformers"] = "transformers"
    # Embeddings: the pooled modes, concatenated in this order, then L2-normalized if `normalize`.
    pooling: tuple[PoolMode, ...] = ("mean",)
    include_prompt: bool = True  # slimline sends no prompt, so this changes nothing it computes
    normalize: bool = False
    max_length: int | None = None  # the longest input in tokens; None: unknown (an old graph folder)
    problem_type: str | None = None  # classifiers: "multi_label_classification" means sigmoid
    labels: tuple[str, ...] | None = None
    # Parts of the model's declared pipeline slimline does not apply (each was logged as a warning).
    skipped: tuple[str, ...] = ()

    @property
    def multi_label(self) -> bool:
        """Independent per-label probabilities (sigmoid) rather than one distribution (softmax)."""
        return self.problem_type == "multi_label_classification"

    def to_json(self) -> Record:
        """Plain JSON data (what meta.json and a model's config hold)."""
        return self.model_dump(mode="json")

    def length(self, requested: int | None = None) -> int:
        """The truncation length to tokenize at: `requested` capped at the model's maximum."""
        cap = self.max_length or FALLBACK_MAX_LENGTH
        return cap if requested is None else min(requested, cap)

    def pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Sentence embeddings [batch, dim × modes] from token vectors [batch, seq, dim] (float64)."""
        return pool(hidden, mask, self.pooling, self.normalize)

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """Class probabilities of classifier logits: sigmoid when multi-label, else softmax."""
        x = logits.astype(np.float64)
        if self.multi_label:
            return 1.0 / (1.0 + np.exp(-x))
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)


def pool(hidden: np.ndarray, mask: np.ndarray, modes: tuple[str, ...], normalize: bool) -> np.ndarray:
    """sentence-transformers' Pooling (padded path) and Normalize, in numpy and float64.

    Padding may sit on either side: the first and last real tokens are found from the mask.
    """
    h = hidden.astype(np.float64)
    m = mask.astype(np.float64)[..., None]
    rows = np.arange(len(h))
    first = mask.argmax(1)  # the first real token (0 when padding is on the right)
    parts: list[np.ndarray] = []
    for mode in modes:
        if mode == "cls":
            parts.append(h[rows, first])
        elif mode == "max":
            parts.append(np.where(m > 0, h, -np.inf).max(1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            count = np.maximum(m.sum(1), 1e-9)
            parts.append((h * m).sum(1) / (count if mode == "mean" else np.sqrt(count)))
        elif mode == "weightedmean":
            # Position weights 1, 2, ... counted from the first real token.
            w = m * (np.arange(1, h.shape[1] + 1, dtype=np.float64)[None, :, None] - first[:, None, None])
            parts.append((h * w).sum(1) / np.maximum(w.sum(1), 1e-9))
        elif mode == "lasttoken":
            last = h.shape[1] - 1 - mask[:, ::-1].argmax(1)
            parts.append((h * m)[rows, last])
        else:
            raise ValueError(f"unknown pooling mode {mode!r}")
    out = np.concatenate(parts, axis=-1)
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out


def from_meta(meta: Record) -> OutputPipeline:
    """The pipeline recorded in a graph folder's meta.json; mean pooling, no normalize when absent."""
    got = meta.get(META_KEY)
    if isinstance(got, dict):
        return OutputPipeline.model_validate(got)
    labels = meta.get("labels")
    return OutputPipeline(labels=tuple(labels) if labels else None)


def from_config(config: Any) -> OutputPipeline | None:
    """The pipeline a model folder's config carries (set by the load stage), or None."""
    got = getattr(config, CONFIG_KEY, None)
    return OutputPipeline.model_validate(got) if isinstance(got, dict) else None


def _read(folder: str | Path, name: str) -> Any:
    """A JSON file of a local model folder or of a cached Hub model (never downloaded); None if absent."""
    path: Path | None = Path(folder) / name
    if not Path(folder).is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(str(folder), name)
        except Exception:  # not a repo id at all (a GGUF path): nothing cached under it
            hit = None
        path = Path(hit) if isinstance(hit, str) else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s: cannot read %s (%s); ignored", folder, name, exc)
        return None


def usable_positions(config: Any) -> int | None:
    """The longest sequence the model's position embeddings take, or None when it declares none."""
    n = getattr(config, "max_position_embeddings", None)  # GPT-2's n_positions maps here
    if not isinstance(n, int) or n <= 0:
        return None
    if getattr(config, "model_type", None) in _POSITION_OFFSET_TYPES:
        pad = getattr(config, "pad_token_id", None)
        n -= (pad if isinstance(pad, int) else 1) + 1
    return n


def _tokenizer_max(folder: str | Path) -> int | None:
    n = (_read(folder, "tokenizer_config.json") or {}).get("model_max_length")
    return int(n) if isinstance(n, int | float) and 0 < n < _UNLIMITED else None


def _pooling(cfg: dict[str, Any]) -> tuple[tuple[PoolMode, ...], bool]:
    mode = cfg.get("pooling_mode")
    if isinstance(mode, str):
        modes: tuple[Any, ...] = (mode,)
    elif isinstance(mode, list | tuple) and mode:
        modes = tuple(mode)
    else:
        modes = tuple(m for key, m in _LEGACY_KEYS.items() if cfg.get(key)) or ("mean",)
    return modes, bool(cfg.get("include_prompt", True))


def _sentence_transformers(folder: str | Path, modules: list[Any]) -> dict[str, Any]:
    """What a sentence-transformers folder's modules declare (pooling, normalize, max_seq_length)."""
    found: dict[str, Any] = {"source": "sentence-transformers", "normalize": False}
    skipped: list[str] = []
    for mod in modules:
        if not isinstance(mod, dict):
            continue
        kind = str(mod.get("type", "")).rsplit(".", 1)[-1]
        rel = str(mod.get("path") or "").strip("/")
        at = f"{rel}/" if rel else ""
        if kind == "Pooling":
            found["pooling"], found["include_prompt"] = _pooling(_read(folder, f"{at}config.json") or {})
        elif kind == "Normalize":
            found["normalize"] = True
        elif kind == "Transformer":
            st = _read(folder, f"{at}sentence_bert_config.json") or {}
            if isinstance(st.get("max_seq_length"), int):
                found["st_max"] = st["max_seq_length"]
            if st.get("do_lower_case"):
                skipped.append("do_lower_case (texts are not lowercased)")
        elif kind not in _NO_OPS:
            skipped.append(f"module {mod.get('name', '?')} ({kind or 'unknown'})")
    prompt = (_read(folder, "config_sentence_transformers.json") or {}).get("default_prompt_name")
    if prompt:
        skipped.append(f"default prompt {prompt!r} (no prompt is added)")
    if skipped:
        log.warning(
            "%s: slimline does not apply these parts of the sentence-transformers pipeline: %s",
            folder,
            "; ".join(skipped),
        )
    found["skipped"] = tuple(skipped)
    return found


def read_pipeline(folder: str | Path, task: str, config: Any) -> OutputPipeline:
    """The output pipeline of the model at `folder` (a local folder, or a Hub id read from the
    cache) whose transformers config is `config`. A config that already carries one (a pruned or
    distilled copy of a loaded model) keeps it."""
    carried = from_config(config)
    if carried is not None:
        return carried
    positions = usable_positions(config)
    found: dict[str, Any] = {}
    modules = _read(folder, "modules.json") if task == "feature-extraction" else None
    if isinstance(modules, list):
        found = _sentence_transformers(folder, modules)
    declared = found.pop("st_max", None) or _tokenizer_max(folder)
    limits = [n for n in (declared, positions) if n]
    if task == "text-classification":
        id2label = getattr(config, "id2label", None) or {}
        n = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
        found["labels"] = tuple(str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n))
        found["problem_type"] = getattr(config, "problem_type", None)
    return OutputPipeline(max_length=min(limits) if limits else None, **found)


def carry(config: Any, pipeline: OutputPipeline) -> None:
    """Record `pipeline` in a model's config, so that the folder saved from it carries it."""
    setattr(config, CONFIG_KEY, pipeline.to_json())
