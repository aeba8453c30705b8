"""SmoothQuant-style outlier migration on an fp32 ONNX graph, before static int8.

Xiao et al., "SmoothQuant" (ICML 2023): a linear layer's input X has a few channels with large
magnitudes that make one per-tensor activation scale coarse for every other channel. For each
channel j, s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) and X W = (X / s) (s W): the activation's
range moves into the weight's rows, which are quantized per channel anyway.

The division by s lands in the cheapest exact place:
- folded into the producing LayerNormalization / SkipLayerNormalization (its gamma and beta) when
  the normalized tensor feeds nothing but these products (pre-norm decoders);
- otherwise one `Mul` by 1/s on the products' input only (post-norm encoders such as BERT, whose
  normalized tensor is also the next residual and must stay as it is).

Pure tensor math on ONNX protos: the fp32 function is unchanged up to rounding (tested at 1e-5).
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from slimline.tasks import sensitivity
from slimline.tasks.runtime import session

FLOOR = 1e-5  # the smallest channel maximum or scale used: all-zero channels keep scale 1
# The norms whose scale (and shift) inputs absorb 1/s: op type -> those inputs' positions.
NORMS = {
    "LayerNormalization": (1, 2),
    "SkipLayerNormalization": (2, 3),  # input, skip, gamma, beta, bias
    "SimplifiedLayerNormalization": (1,),  # RMSNorm: no shift
    "SkipSimplifiedLayerNormalization": (2,),  # input, skip, gamma, bias (added before the norm)
}


def weight_products(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """{activation tensor: the MatMuls that multiply it by a constant 2-D fp32 weight} (the
    products int8 quantizes, as tasks.sensitivity finds them, grouped by their input)."""
    inits = {t.name for t in model.graph.initializer}
    groups: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for p in sensitivity.weight_products(model):
        if p.node.input[0] not in inits:
            groups[p.node.input[0]].append(p.node)
    return dict(groups)


def activation_absmax(
    model: onnx.ModelProto, feeds: Iterable[dict[str, np.ndarray]], tensors: list[str]
) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |x| of each named tensor over every feed, run by ONNX Runtime
    on a probe copy of the graph (weights beside it, so a large graph fits protobuf's limit)."""
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as folder:
        sess = session(sensitivity.probe(model, tensors, Path(folder)))
        for feed in feeds:
            values = dict(zip(tensors, sess.run(tensors, feed), strict=True))
            for t in tensors:
                v = np.abs(values[t]).reshape(-1, values[t].shape[-1]).max(axis=0)
                out[t] = np.maximum(out[t], v) if t in out else v
    return out


def smoothing_scales(act_max: np.ndarray, weight_max: np.ndarray, alpha: float) -> np.ndarray:
    """s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), 1 where a channel is all zeros."""
    a = np.maximum(act_max.astype(np.float64), FLOOR)
    w = np.maximum(weight_max.astype(np.float64), FLOOR)
    s = a**alpha / w ** (1.0 - alpha)
    s[(act_max <= 0) | (weight_max <= 0)] = 1.0
    return np.clip(s, FLOOR, 1.0 / FLOOR).astype(np.float32)


def _consumers(graph: onnx.GraphProto, tensor: str) -> list[onnx.NodeProto]:
    return [n for n in graph.node if tensor in n.input]


def _add(graph: onnx.GraphProto, array: np.ndarray, name: str) -> str:
    """Add `array` as initializer `name` (initializers may be shared: never edit one in place)."""
    graph.initializer.append(numpy_helper.from_array(array.astype(np.float32), name))
    return name


def _drop_unused(graph: onnx.GraphProto) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def smooth(
    model: onnx.ModelProto, act_max: dict[str, np.ndarray], alpha: float
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of `model` with each weight-product input smoothed; returns it and, per smoothed
    tensor, where its 1/s went ("folded" into the norm, or "mul")."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    done: dict[str, str] = {}
    for i, (tensor, nodes) in enumerate(sorted(weight_products(out).items())):
        if tensor not in act_max:
            continue
        w_max = np.max([np.abs(weights[n.input[1]]).max(axis=1) for n in nodes], axis=0)
        s = smoothing_scales(act_max[tensor], w_max, alpha)
        for n in nodes:
            n.input[1] = _add(graph, weights[n.input[1]] * s[:, None], f"smooth{i}_{n.name}_w")
        norm = producer.get(tensor)
        only_products = {id(c) for c in _consumers(graph, tensor)} == {id(n) for n in nodes}
        if (
            norm is not None
            and norm.op_type in NORMS
            and norm.output[0] == tensor
            and only_products
            and tensor not in outputs
            and all(norm.input[k] in weights for k in NORMS[norm.op_type] if k < len(norm.input))
        ):
            for k in NORMS[norm.op_type]:
                if k < len(norm.input) and norm.input[k]:
                    norm.input[k] = _add(graph, weights[norm.input[k]] / s, f"smooth{i}_{norm.name}_{k}")
            done[tensor] = "folded"
            continue
        inv = _add(graph, 1.0 / s, f"smooth{i}_inv")
        smoothed = f"smooth{i}_{tensor}"
        mul = helper.make_node("Mul", [tensor, inv], [smoothed], name=f"smooth{i}_mul")
        first = min(list(graph.node).index(n) for n in nodes)
        graph.node.insert(first, mul)
        for n in nodes:
            n.input[0] = smoothed
        done[tensor] = "mul"
    _drop_unused(graph)
    return out, done


def smooth_file(src: Path, dst: Path, feeds: Iterable[dict[str, np.ndarray]], alpha: float) -> dict[str, str]:
    """Smooth the graph at `src` with activation ranges measured on `feeds`; write it to `dst`."""
    model = onnx.load(str(src))
    act_max = activation_absmax(model, feeds, list(weight_products(model)))
    smoothed, done = smooth(model, act_max, alpha)
    large = smoothed.ByteSize() > 1_500_000_000  # protobuf's 2 GB limit: weights beside the graph
    onnx.save(smoothed, str(dst), save_as_external_data=large, location=dst.name + ".data" if large else None)
    return done
