"""Affine int4 (float offsets outside MatMulNBits): exact on Q4_1 weights, equal to its
de-quantized weights in ONNX Runtime, and the LM head at 8 bits when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from slimline.tasks.quantization._affine import affine_codes, dequantize, quantize_affine
from slimline.tasks.quantization.int4_weight_only import Int4Config
from slimline.tasks.stages import quantize

RNG = np.random.default_rng(0)


def _q4_1(k: int, n: int) -> np.ndarray:
    """A weight stored as GGUF Q4_1 stores it: per 32 weights along K, fp16 scale and minimum,
    4-bit codes with both extremes present (the format takes them from the block's min/max)."""
    blocks = k // 32
    d = RNG.uniform(0.001, 0.02, (n, blocks)).astype(np.float16).astype(np.float32)
    m = RNG.uniform(-0.15, -0.01, (n, blocks)).astype(np.float16).astype(np.float32)
    q = RNG.integers(0, 16, (n, blocks, 32))
    q[..., 0], q[..., 1] = 0, 15
    return (d[..., None] * q + m[..., None]).reshape(n, k).T


def _q8_0(k: int, n: int) -> np.ndarray:
    """As GGUF Q8_0 stores a weight: per 32 weights, an fp16 scale d = max|w| / 127, codes in ±127."""
    d = RNG.uniform(0.001, 0.02, (n, k // 32, 1)).astype(np.float16).astype(np.float32)
    q = RNG.integers(-127, 128, (n, k // 32, 32))
    q[..., 0] = 127
    return (d * q).reshape(n, k).T


def test_gguf_q4_1_and_q8_0_weights_are_reproduced_exactly() -> None:
    w = _q4_1(96, 24)
    q, scale, offset = affine_codes(w, 32, 4)
    assert q.max() == 15 and q.min() == 0
    np.testing.assert_allclose(dequantize(q, scale, offset, 96), w, rtol=0, atol=1e-6)
    w = _q8_0(96, 24)
    np.testing.assert_allclose(dequantize(*affine_codes(w, 32, 8, symmetric=True), 96), w, rtol=0, atol=1e-6)
    # Plain min-max rounding of an arbitrary weight is off by at most half a step.
    g = RNG.normal(size=(80, 8)).astype(np.float32)
    q, scale, offset = affine_codes(g, 32, 4)
    err = np.abs(dequantize(q, scale, offset, 80) - g)[:64].reshape(2, 32, 8)  # the whole blocks
    assert (err <= scale.T[:2, None, :] / 2 + 1e-6).all() and err.max() > 0


def _two_matmuls(k: int, w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", "s", k])
    ys = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("y1", "logits")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["y1"], name="proj")]
    nodes.append(helper.make_node("MatMul", ["x", "w2"], ["logits"], name="lm_head"))
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    graph = helper.make_graph(nodes, "g", [x], ys, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


@pytest.mark.parametrize("k", [96, 80])  # whole blocks, and a ragged last block
def test_ort_runs_the_dequantized_weights(k: int) -> None:
    w1, w2 = RNG.normal(size=(k, 24)).astype(np.float32), RNG.normal(size=(k, 40)).astype(np.float32)
    model = _two_matmuls(k, w1, w2)
    assert (
        quantize_affine(model, bits=4, block_size=32, accuracy_level=None, symmetric_bits={"lm_head": 8}) == 2
    )
    ops = [n.op_type for n in model.graph.node]
    # The affine projection: a block-sum of its input, a correction MatMul and an Add. The
    # symmetric head needs neither.
    assert ops.count("MatMulNBits") == 2 and ops.count("MatMul") == 2 and ops.count("Add") == 1
    bits = {n.output[0]: a.i for n in model.graph.node for a in n.attribute if a.name == "bits"}
    assert bits == {"logits": 8, "proj_affine4_main": 4}
    assert not {t.name for t in model.graph.initializer} & {"w1", "w2"}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = RNG.normal(size=(2, 3, k)).astype(np.float32)
    y1, logits = sess.run(None, {"x": x})
    for got, w, nb, sym in ((y1, w1, 4, False), (logits, w2, 8, True)):
        want = x @ dequantize(*affine_codes(w, 32, nb, symmetric=sym), k)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # The 8-bit head is much closer to the fp32 weights than the 4-bit projection.
    assert np.abs(logits - x @ w2).max() < np.abs(y1 - x @ w1).max() / 4


def test_affine_on_a_decoder(graphs, runs, tmp_path, texts) -> None:
    cfg = Int4Config(block_size=16, algorithm="affine", head_bits=8)
    rec = quantize.apply(cfg, graphs["llama"], tmp_path / "q")
    assert rec["ops"].get("MatMulNBits", 0) > 0 and "MatMul" in rec["ops"]
    out, ref = runs(Path(rec["path"]), texts), runs(graphs["llama"], texts)
    assert out.shape == ref.shape and np.abs(out - ref).max() < np.abs(ref).max()


def test_head_bits_only_with_affine() -> None:
    with pytest.raises(ValueError, match="only algorithm: affine reads head_bits"):
        Int4Config(head_bits=8)
    assert "head_bits" not in Int4Config().to_json()  # old int4 stage ids are unchanged
    assert Int4Config(algorithm="affine", head_bits=8).to_json()["head_bits"] == 8
