"""Affine weight-only quantization with exact float offsets, run on MatMulNBits' fast path.

Per block of `block_size` weights along K, min-max affine quantization stores
`w ≈ scale · q + offset` with q in [0, 2^bits − 1] and a float offset (the block's minimum).
MatMulNBits' fast CPU kernels take only integer zero points; a float zero point (as HQQ writes)
falls back to de-quantizing the whole matrix on every call (SmolLM2-135M: 9 against 226
tokens/s). So the offset is taken out of the kernel. With the kernel's default symmetric zero
point z = 2^(bits−1):

    x·W = Σ_b scale_b · Σ_{k∈b} x_k (q_k − z)  +  Σ_b (offset_b + z·scale_b) · Σ_{k∈b} x_k
        = MatMulNBits(x)                        +  MatMul(x·S, C)

where S is the [K, blocks] 0/1 block-membership matrix (x·S are the per-block sums of x,
computed once per distinct input) and C is [blocks, N]. The correction costs 1/block_size of
the weight's fp32 size. A weight that was itself stored this way, as every Q4_1 tensor of a
GGUF file is (per 32 weights: a scale, a minimum, 4-bit codes), is reproduced exactly at
`block_size: 32`, so the int4 graph of a Q4_1-derived model is the model, not a second
rounding of it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def affine_codes(
    w: np.ndarray, block: int, bits: int, *, symmetric: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes of `w` [K, N] per block along K: (q [N, blocks, block] uint8, scale and offset
    [N, blocks] float32), with w[k, n] ≈ scale · q + offset.

    Asymmetric (min-max): offset = the block's minimum, a float. Symmetric: scale = max|w| /
    (2^(bits−1) − 1) and offset = −2^(bits−1) · scale, which MatMulNBits' default zero point
    computes by itself; it is how GGUF's Q8_0 stores a tensor, and reproduces it exactly."""
    k, n = w.shape
    blocks = -(-k // block)
    # The last block is padded with its own last row, which moves neither its min nor its max.
    padded = np.pad(w.astype(np.float32), ((0, blocks * block - k), (0, 0)), mode="edge")
    wb = padded.T.reshape(n, blocks, block)
    levels = (1 << bits) - 1
    if symmetric:
        zero = 1 << (bits - 1)
        scale = np.abs(wb).max(axis=-1) / (zero - 1)
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(wb / scale[..., None]) + zero, 0, levels).astype(np.uint8)
        return q, scale.astype(np.float32), (-zero * scale).astype(np.float32)
    lo, hi = wb.min(axis=-1), wb.max(axis=-1)
    scale = (hi - lo) / levels
    scale[scale == 0] = 1.0  # a constant block: every code 0, the offset alone is the value
    q = np.clip(np.rint((wb - lo[..., None]) / scale[..., None]), 0, levels).astype(np.uint8)
    return q, scale.astype(np.float32), lo.astype(np.float32)


def dequantize(q: np.ndarray, scale: np.ndarray, offset: np.ndarray, k: int) -> np.ndarray:
    """The [K, N] weight that codes `q` with `scale` and `offset` stand for."""
    wb = q.astype(np.float32) * scale[..., None] + offset[..., None]
    n = wb.shape[0]
    return wb.reshape(n, -1)[:, :k].T


def pack(q: np.ndarray, bits: int) -> np.ndarray:
    """MatMulNBits' B layout: [N, blocks, block·bits/8], low nibble first for 4 bits."""
    if bits == 8:
        return q
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def _block_membership(k: int, block: int) -> np.ndarray:
    s = np.zeros((k, -(-k // block)), dtype=np.float32)
    s[np.arange(k), np.arange(k) // block] = 1.0
    return s


def quantize_affine(
    model: onnx.ModelProto,
    *,
    bits: int,
    block_size: int,
    accuracy_level: int | None,
    symmetric_bits: dict[str, int] | None = None,
) -> int:
    """Replace every MatMul with a constant 2-D fp32 weight in `model`'s main graph by the
    affine form above, in place; the nodes named in `symmetric_bits` are quantized
    symmetrically at the bits given (one MatMulNBits, no correction). Returns how many MatMuls
    were replaced."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    symmetric_bits = symmetric_bits or {}
    sums: dict[tuple[str, int], str] = {}  # (input, K) -> its block sums, shared by consumers
    nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    dropped: set[str] = set()
    replaced = 0
    for node in graph.node:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and not node.domain else None
        if w is None or len(w.dims) != 2 or w.data_type != onnx.TensorProto.FLOAT:
            nodes.append(node)
            continue
        symmetric = node.name in symmetric_bits
        nb = symmetric_bits.get(node.name, bits)
        arr = numpy_helper.to_array(w)
        k, n = arr.shape
        q, scale, offset = affine_codes(arr, block_size, nb, symmetric=symmetric)
        base = f"{node.name or w.name}_{'sym' if symmetric else 'affine'}{nb}"
        new_inits += [
            numpy_helper.from_array(pack(q, nb), f"{base}_B"),
            numpy_helper.from_array(scale, f"{base}_scales"),
        ]
        attrs = {"K": k, "N": n, "bits": nb, "block_size": block_size}
        if accuracy_level is not None:
            attrs["accuracy_level"] = accuracy_level
        x = node.input[0]
        dropped.add(w.name)
        replaced += 1
        if symmetric:
            nodes.append(_nbits(x, base, list(node.output), attrs))
            continue
        correction = offset + (1 << (nb - 1)) * scale  # [N, blocks]; z = 2^(bits-1) is the kernel's
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(correction.T), f"{base}_C"))
        if (x, k) not in sums:
            members = f"{x}_blocks{k}_{block_size}"
            new_inits.append(numpy_helper.from_array(_block_membership(k, block_size), f"{base}_S"))
            nodes.append(helper.make_node("MatMul", [x, f"{base}_S"], [members], name=f"{base}_blocksum"))
            sums[(x, k)] = members
        main, fix = f"{base}_main", f"{base}_offset"
        nodes.append(_nbits(x, base, [main], attrs))
        nodes.append(helper.make_node("MatMul", [sums[(x, k)], f"{base}_C"], [fix], name=f"{base}_corr"))
        nodes.append(helper.make_node("Add", [main, fix], list(node.output), name=f"{base}_add"))
    still_used = {i for nd in nodes for i in nd.input}
    keep = [t for t in graph.initializer if t.name not in dropped or t.name in still_used]
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.ClearField("initializer")
    graph.initializer.extend([*keep, *new_inits])
    _ensure_opset(model, "com.microsoft")
    return replaced


def _nbits(x: str, base: str, outputs: list[str], attrs: dict[str, int]) -> onnx.NodeProto:
    inputs = [x, f"{base}_B", f"{base}_scales"]  # no zero points: the kernel's default 2^(bits-1)
    name = f"{base}_nbits"
    return helper.make_node("MatMulNBits", inputs, outputs, name=name, domain="com.microsoft", **attrs)


def _ensure_opset(model: onnx.ModelProto, domain: str) -> None:
    if not any(o.domain == domain for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(domain, 1))


def output_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMuls whose result is a graph output (an LM head's logits)."""
    wanted = {o.name for o in model.graph.output}
    return [nd.name for nd in model.graph.node if nd.op_type == "MatMul" and set(nd.output) & wanted]
