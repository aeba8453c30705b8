"""How much each weight MatMul suffers from int8: the table behind `exclude: {auto: k}`.

What is measured (a cheap, local proxy): the fp32 graph runs once on calibration text with every
weight MatMul's input activation X exposed as an extra output. Then, per MatMul with weight W,
int8 is simulated in numpy as ONNX Runtime's dynamic quantization does it (activations uint8,
asymmetric, one scale per tensor; weights int8, symmetric, per tensor or per output channel,
7 bits with reduce_range), and the score is the relative error of that MatMul's output:
||XW - deq(q(X)) deq(q(W))|| / ||XW||. Activation outliers (a few huge channels that stretch the
one per-tensor scale) and weight outliers both show up in it; what it does not see is how an
error grows through the layers after it, which a full-graph measurement per MatMul would (one
quantization and inference per MatMul: ~N times the cost). One forward pass plus N small
matrix products is a second or two for MiniLM's 36 weight MatMuls on 2 cores.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .graph import feeds_for
from .runtime import session

MAX_ROWS = 4096  # activation rows kept per MatMul: enough for the error's scale, bounded in memory


def weight_matmuls(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.TensorProto]]:
    """MatMul nodes whose second input is a 2-D float initializer (the ones int8 quantizes)."""
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if w is not None and len(w.dims) == 2 and w.data_type == onnx.TensorProto.FLOAT:
            out.append((node, w))
    return out


def _quant_act(x: np.ndarray) -> np.ndarray:
    """uint8 asymmetric per-tensor, the range widened to include 0 (ORT's dynamic rule)."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.round(-lo / scale)
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def _quant_weight(w: np.ndarray, per_channel: bool, reduce_range: bool) -> np.ndarray:
    """int8 symmetric, per tensor or per output column."""
    qmax = 63.0 if reduce_range else 127.0
    amax = np.abs(w).max(axis=0, keepdims=True) if per_channel else np.abs(w).max()
    scale = np.where(amax > 0, amax / qmax, 1.0)
    return np.clip(np.round(w / scale), -qmax, qmax) * scale


def _activations(
    model: onnx.ModelProto, src: Path, names: list[str], feed: dict[str, np.ndarray]
) -> list[Any]:
    """Run the graph with `names` exposed as outputs; their values, in order."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)  # saving with external data moves the weights out of the model saved
    model = probe
    known = {o.name for o in model.graph.output}
    for name in names:
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            known.add(name)
    with tempfile.TemporaryDirectory(dir=src.parent) as tmp:
        path = Path(tmp) / "probe.onnx"
        # External data keeps large graphs (LLMs) under protobuf's 2 GB limit.
        onnx.save(model, str(path), save_as_external_data=True, location="probe.onnx.data")
        sess = session(path)
        wanted = {o.name for o in sess.get_outputs()}
        feeds = {k: v for k, v in feed.items() if k in {i.name for i in sess.get_inputs()}}
        values = sess.run([n for n in names if n in wanted], feeds)
    return values


def matmul_sensitivity(
    onnx_path: Path,
    texts: list[str],
    max_length: int,
    *,
    per_channel: bool = False,
    reduce_range: bool = False,
    samples: int = 16,
) -> list[dict[str, Any]]:
    """One row per weight MatMul, most sensitive first: {"node", "score", "weight_shape"}."""
    src = Path(onnx_path)
    model = onnx.load(str(src))
    targets = weight_matmuls(model)
    if not targets or not texts:
        return []
    feed = feeds_for(src, texts[:samples], min(samples, len(texts)), max_length)
    acts = _activations(model, src, list(dict.fromkeys(n.input[0] for n, _ in targets)), feed)
    by_name = dict(zip(dict.fromkeys(n.input[0] for n, _ in targets), acts, strict=True))
    rng = np.random.default_rng(0)
    rows = []
    for node, init in targets:
        w = numpy_helper.to_array(init).astype(np.float64)
        x = np.asarray(by_name[node.input[0]], np.float64).reshape(-1, w.shape[0])
        if len(x) > MAX_ROWS:
            x = x[rng.choice(len(x), MAX_ROWS, replace=False)]
        y = x @ w
        err = y - _quant_act(x) @ _quant_weight(w, per_channel, reduce_range)
        norm = float(np.linalg.norm(y))
        score = float(np.linalg.norm(err)) / norm if norm > 0 else 0.0
        rows.append({"node": node.name, "score": score, "weight_shape": list(w.shape)})
    return sorted(rows, key=lambda r: -r["score"])


def most_sensitive(table: list[dict[str, Any]], k: int) -> list[str]:
    """The names of the k most sensitive MatMuls of a table."""
    return [r["node"] for r in table[:k]]
