"""The ONNX folder convention, and how two models' outputs are compared.

Every graph stage writes a folder holding `model.onnx` (+ external data), `meta.json` (task,
inputs, head geometry) and the tokenizer, so later stages and evaluation never need torch.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from slimline.tasks.base import Record, read_json, write_json
from slimline.tasks.inputs import encode

ONNX_NAME = "model.onnx"
META_NAME = "meta.json"


def read_meta(onnx_path: Path) -> Record:
    """The meta.json written beside an exported graph (carried along by later graph stages)."""
    return read_json(Path(onnx_path).parent / META_NAME)


def write_meta(folder: Path, meta: Record) -> None:
    """Write a graph folder's meta.json."""
    write_json(Path(folder) / META_NAME, meta)


def copy_sidecars(src_dir: Path, dst_dir: Path) -> None:
    """Copy meta.json and the tokenizer files, everything but the graph, to a derived graph's folder."""
    for f in Path(src_dir).iterdir():
        if f.is_file() and not f.name.startswith(ONNX_NAME):
            shutil.copy2(f, Path(dst_dir) / f.name)


def onnx_size_bytes(onnx_path: Path) -> int:
    """Bytes of an ONNX graph plus its external-data files."""
    onnx_path = Path(onnx_path)
    return sum(p.stat().st_size for p in onnx_path.parent.glob(onnx_path.name + "*") if p.is_file())


def op_counts(onnx_path: Path) -> dict[str, int]:
    """Operator histogram of a graph (without loading external weights)."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return dict(Counter(n.op_type for n in graph.node))


def without_initializer_shapes(onnx_path: Path) -> Path:
    """The graph with no `value_info` for its weights: a copy beside it, or itself when it has none.

    The ORT optimizer records shapes for initializers too; a quantizer that transposes a weight
    (a classifier head's Gemm with transB) then meets its own stale shape, and ONNX shape
    inference fails ("Inferred shape and existing shape differ"). Weights carry their shapes
    themselves, so dropping those entries loses nothing. The copy is a new file, never the
    input rewritten: the input may be a hard link to a cached stage output.
    """
    model = onnx.load(str(onnx_path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    stale = [v for v in model.graph.value_info if v.name in weights]
    if not stale:
        return Path(onnx_path)
    for v in stale:
        model.graph.value_info.remove(v)
    out = Path(onnx_path).with_name("model.shapes.onnx")  # beside it: external data stays found
    onnx.save(model, str(out))
    return out


PAST = "past_key_values.{}.{}"  # ONNX Runtime GenAI's names for the KV cache, per layer and key/value
PRESENT = "present.{}.{}"


def past_names(meta: Record) -> list[str]:
    """The KV-cache inputs of a decoding graph (none for a single-forward graph)."""
    kv = meta.get("kv_cache")
    return [PAST.format(i, kind) for i in range(kv["layers"]) for kind in ("key", "value")] if kv else []


def empty_past(meta: Record, batch: int) -> dict[str, np.ndarray]:
    """A KV cache of length zero: the graph then reads the whole sequence at once (a prefill)."""
    kv = meta.get("kv_cache")
    if not kv:
        return {}
    shape = (batch, kv["kv_heads"], 0, kv["head_dim"])
    return {name: np.zeros(shape, np.float32) for name in past_names(meta)}


def with_past(feed: dict[str, np.ndarray], meta: Record) -> dict[str, np.ndarray]:
    """`feed` plus an empty KV cache when the graph decodes with one: every forward-pass user
    (evaluation, latency, calibration, parity) runs decoding graphs as a prefill."""
    return {**feed, **empty_past(meta, len(feed["input_ids"]))}


def tokenizer_of(onnx_path: Path) -> object:
    """The tokenizer stored beside a graph."""
    from slimline.tasks.load import load_tokenizer

    return load_tokenizer(str(Path(onnx_path).parent))


def feeds_for(onnx_path: Path, texts: list[str], batch: int, seq: int) -> dict[str, np.ndarray]:
    """A real-text feed of exactly (batch, seq) for the graph at `onnx_path`."""
    meta = read_meta(onnx_path)
    return with_past(encode(tokenizer_of(onnx_path), texts, batch, seq, meta["inputs"]), meta)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row (sample) of `a` with the same row of `b`, in float64."""
    a2, b2 = a.reshape(a.shape[0], -1).astype(np.float64), b.reshape(b.shape[0], -1).astype(np.float64)
    cos = (a2 * b2).sum(1) / (np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1) + 1e-12)
    return np.clip(cos, -1.0, 1.0)


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, minimum per-sample cosine) between two batches of outputs."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(diff.max()), float(row_cosines(a, b).min())
