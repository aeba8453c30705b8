"""How much each weight MatMul suffers from int8: the table behind `exclude: {auto: k}`.

What is measured (a cheap, local proxy). The fp32 graph runs on each calibration text alone, at
its own length, with every weight product's input activation X exposed as an extra output. Per
product with weight W (a MatMul, or a Gemm where the technique quantizes Gemm), int8 is then
simulated in numpy as ONNX Runtime's dynamic quantization does it: activations uint8,
asymmetric, one scale per tensor and per call (the range widened to include 0); weights int8,
symmetric, per tensor or per output channel, [-64, 64] with reduce_range. The score is the
relative error of that product's output over all the calibration tokens:
sqrt(sum ||XW - deq(q(X)) deq(q(W))||^2) / sqrt(sum ||XW||^2).

Why this and not the alternative. One text per run, at its own length, is what batch-1 inference
sees: no padding rows dilute the activations, and each text gets its own activation range, as a
real call would. Activation outliers (a few huge channels that stretch the one per-tensor
scale) and weight outliers both raise the score. What it does not see is how an error grows
through the layers after it; a full-graph measurement (each MatMul quantized alone with ORT,
the change of the model output measured) would, but on all-MiniLM-L6-v2 with 64 texts that is a
quantization (0.6 s) plus an inference (3.6 s at length 128) per MatMul, about 150 s for its 36,
against the proxy's ~2 s.

Cost (all-MiniLM-L6-v2, optimised graph, 36 weight MatMuls, 64 texts of the built-in corpus,
max_length 128; AMD EPYC with AVX-512 VNNI, 2 cores): 2.0 s in a fresh process, 0.9 s warm; the
forward passes and the numpy products about half each. Pending activations are bounded (~128 MB).

Does it mean something: on the same setup, with 128 other texts held out, dynamic int8's mean
1 - cosine to fp32 is 0.036 per tensor; keeping the proxy's top 4 in fp32 brings it to 0.0072,
keeping its bottom 4 or 4 at random leaves it at 0.036 and 0.035 (per channel: 0.0068, then
0.0049 with the top 4, 0.0067 and 0.0064 with the bottom 4 and random 4). Per tensor, the top
four are the FFN down projections of four layers (1536 x 384, after GELU).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from slimline.tasks.graph import read_meta, tokenizer_of, with_past
from slimline.tasks.inputs import encode
from slimline.tasks.runtime import session

WEIGHT_OPS = ("MatMul", "Gemm")


@dataclass(frozen=True)
class WeightProduct:
    """A MatMul or Gemm by a constant weight, the weight laid out as (in, out)."""

    node: onnx.NodeProto
    weight: np.ndarray
    transpose_input: bool = False  # Gemm with transA: its activation arrives as (in, rows)


def _attr(node: onnx.NodeProto, name: str, default: float) -> float:
    """A numeric attribute of a node, or the operator's default when the node leaves it out."""
    return next(
        (float(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name == name), default
    )


def weight_products(model: onnx.ModelProto, op_types: Iterable[str] = ("MatMul",)) -> list[WeightProduct]:
    """The nodes int8 quantizes by their weight: a MatMul/Gemm whose second input is a 2-D float
    initializer. Gemm only when asked: ORT's dynamic quantization leaves Gemm in float."""
    wanted = set(op_types) & set(WEIGHT_OPS)
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        # Unnamed nodes are left out: ORT's nodes_to_exclude could not name them either.
        if node.op_type not in wanted or len(node.input) < 2 or not node.name:
            continue
        init = inits.get(node.input[1])
        if init is None or len(init.dims) != 2 or init.data_type != onnx.TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(init).astype(np.float32)
        if node.op_type == "Gemm" and _attr(node, "transB", 0):
            w = w.T  # alpha and beta are left out: a relative error does not change with them
        out.append(WeightProduct(node, w, node.op_type == "Gemm" and bool(_attr(node, "transA", 0))))
    return out


def weight_matmuls(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.TensorProto]]:
    """MatMul nodes whose second input is a 2-D float initializer (the ones dynamic int8 quantizes)."""
    inits = {i.name: i for i in model.graph.initializer}
    return [(p.node, inits[p.node.input[1]]) for p in weight_products(model)]


def _quant_act(x: np.ndarray) -> np.ndarray:
    """uint8 asymmetric per-tensor, the range widened to include 0 (DynamicQuantizeLinear)."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = np.float32((hi - lo) / 255.0 or 1.0)
    zero = np.clip(np.round(-lo / scale), 0, 255)
    return ((np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)


def _quant_weight(w: np.ndarray, per_channel: bool, reduce_range: bool) -> np.ndarray:
    """int8 symmetric, per tensor or per output column; ORT's reduced range is [-64, 64]."""
    qmax = 64.0 if reduce_range else 127.0
    amax = np.abs(w).max(axis=0, keepdims=True) if per_channel else np.abs(w).max()
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    return (np.clip(np.round(w / scale), -qmax, qmax) * scale).astype(np.float32)


def _text_feeds(src: Path, texts: list[str], max_length: int) -> list[dict[str, np.ndarray]]:
    """One feed per text at its own length (no padding), as a batch-1 call sees it."""
    meta = read_meta(src)
    tok: Any = tokenizer_of(src)
    feeds = []
    for t in texts:
        seq = max(1, min(max_length, len(tok(t)["input_ids"])))
        feeds.append(with_past(encode(tok, [t], 1, seq, meta["inputs"]), meta))
    return feeds


def probe(model: onnx.ModelProto, names: list[str], folder: Path) -> Path:
    """A copy of the graph with `names` exposed as outputs, saved in `folder`."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)  # the caller's model keeps its weights inline
    known = {o.name for o in probe.graph.output} | {i.name for i in probe.graph.input}
    for name in names:
        if name not in known:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    path = folder / "probe.onnx"
    # External data keeps large graphs (LLMs) under protobuf's 2 GB limit.
    onnx.save(probe, str(path), save_as_external_data=True, location="probe.onnx.data")
    return path


def _rows(x: np.ndarray, p: WeightProduct) -> np.ndarray:
    """The activation as (rows, in), the layout of the product's weight."""
    return (x.T if p.transpose_input else x).reshape(-1, p.weight.shape[0])


def matmul_sensitivity(
    onnx_path: Path,
    texts: list[str],
    max_length: int,
    *,
    per_channel: bool = False,
    reduce_range: bool = False,
    op_types: Iterable[str] = ("MatMul",),
    samples: int = 64,
) -> list[dict[str, Any]]:
    """One row per weight MatMul (and Gemm, when in `op_types`), most sensitive first:
    {"node": name, "score": relative output error under int8, "weight_shape": [in, out]}.

    The first `samples` texts are used, each truncated to `max_length` tokens.
    """
    src = Path(onnx_path)
    model = onnx.load(str(src))
    targets = weight_products(model, op_types)
    texts = texts[:samples]
    if not targets or not texts:
        return []
    acts = list(dict.fromkeys(p.node.input[0] for p in targets))
    weights = {p.node.name: _quant_weight(p.weight, per_channel, reduce_range) for p in targets}
    err2 = dict.fromkeys(weights, 0.0)
    ref2 = dict.fromkeys(weights, 0.0)
    # Activations (exact, quantized) wait here so that the products run on many rows at once:
    # one BLAS call per node instead of one per text, about twice as fast. Each text's
    # activations are quantized on their own first: the scale is per call.
    pending: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {p.node.name: [] for p in targets}
    width = sum(p.weight.shape[0] for p in targets)
    budget = 1 << 24  # floats of pending activations (x2 with the quantized copy): ~128 MB

    def flush() -> None:
        for p in targets:
            name = p.node.name
            if not pending[name]:
                continue
            x = np.concatenate([a for a, _ in pending[name]])
            xq = np.concatenate([q for _, q in pending[name]])
            pending[name].clear()
            y = x @ p.weight
            e = y - xq @ weights[name]
            err2[name] += float(np.square(e, dtype=np.float64).sum())
            ref2[name] += float(np.square(y, dtype=np.float64).sum())

    with tempfile.TemporaryDirectory(dir=src.parent) as tmp:
        sess = session(probe(model, acts, Path(tmp)))
        inputs = {i.name for i in sess.get_inputs()}
        held = 0
        for feed in _text_feeds(src, texts, max_length):
            feed = {k: v for k, v in feed.items() if k in inputs}
            # An activation that is a graph input itself comes from the feed, not the run.
            run = [a for a in acts if a not in feed]
            values = dict(zip(run, sess.run(run, feed), strict=True)) | feed
            quantized: dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]] = {}
            for p in targets:
                key = (p.node.input[0], p.transpose_input)  # Q, K and V share one input
                if key not in quantized:
                    x = _rows(np.asarray(values[key[0]], np.float32), p)
                    quantized[key] = (x, _quant_act(x))
                pending[p.node.name].append(quantized[key])
            held += len(next(iter(quantized.values()))[0])
            if held * width >= budget:
                flush()
                held = 0
        flush()
    rows = [
        {
            "node": p.node.name,
            "score": float(np.sqrt(err2[p.node.name] / ref2[p.node.name])) if ref2[p.node.name] > 0 else 0.0,
            "weight_shape": list(p.weight.shape),
        }
        for p in targets
    ]
    return sorted(rows, key=lambda r: -r["score"])


def most_sensitive(table: list[dict[str, Any]], k: int) -> list[str]:
    """The names of the k most sensitive MatMuls of a table."""
    return [r["node"] for r in table[:k]]
