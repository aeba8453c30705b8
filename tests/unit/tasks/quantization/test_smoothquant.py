"""SmoothQuant moves activation outliers into weights without changing the fp32 function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from slimline.tasks.graph import feeds_for
from slimline.tasks.quantization._smoothquant import (
    activation_absmax,
    smooth,
    smooth_file,
    smoothing_scales,
    weight_products,
)
from slimline.tasks.runtime import session


def _prenorm_block(rng: np.random.Generator) -> onnx.ModelProto:
    """LayerNorm -> two weight MatMuls, nothing else reading the norm (a pre-norm block)."""
    hidden = 8
    inits = [
        numpy_helper.from_array(np.ones(hidden, np.float32), "gamma"),  # shared with nothing else here
        numpy_helper.from_array(np.zeros(hidden, np.float32), "beta"),
        numpy_helper.from_array(rng.normal(size=(hidden, 6)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(hidden, 4)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], name="ln", axis=-1),
        helper.make_node("MatMul", ["y", "w1"], ["o1"], name="mm1"),
        helper.make_node("MatMul", ["y", "w2"], ["o2"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, hidden])],
        [
            helper.make_tensor_value_info("o1", TensorProto.FLOAT, [2, 5, 6]),
            helper.make_tensor_value_info("o2", TensorProto.FLOAT, [2, 5, 4]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_scales_follow_the_definition() -> None:
    act, w = np.array([8.0, 1.0, 0.0]), np.array([2.0, 0.5, 3.0])
    s = smoothing_scales(act, w, 0.5)
    assert np.allclose(s[:2], np.sqrt(act[:2]) / np.sqrt(w[:2])) and s[2] == 1.0  # all-zero channel: 1


def test_a_prenorm_block_folds_into_the_norm_and_keeps_its_outputs() -> None:
    rng = np.random.default_rng(0)
    model = _prenorm_block(rng)
    x = rng.normal(size=(2, 5, 8)).astype(np.float32)
    feeds = [{"x": x}]
    act = activation_absmax(model, feeds, ["y"])
    smoothed, where = smooth(model, act, 0.5)
    assert where == {"y": "folded"}
    assert not any(n.op_type == "Mul" for n in smoothed.graph.node)  # nothing added at run time
    inits = {t.name: numpy_helper.to_array(t) for t in smoothed.graph.initializer}
    ln = next(n for n in smoothed.graph.node if n.op_type == "LayerNormalization")
    assert not np.allclose(inits[ln.input[1]], 1.0)  # the norm's scale carries 1/s now
    # After smoothing, the norm's output has the same maximum in every channel's direction that
    # SmoothQuant aims for at alpha 0.5: max|X_j / s_j| == max|W_j * s_j| (per channel).
    after = activation_absmax(smoothed, feeds, [ln.output[0]])[ln.output[0]]
    w = np.concatenate([inits[n.input[1]] for n in smoothed.graph.node if n.op_type == "MatMul"], axis=1)
    assert np.allclose(after, np.abs(w).max(axis=1), rtol=1e-4)
    a, b = session(model.SerializeToString()), session(smoothed.SerializeToString())
    for ra, rb in zip(a.run(None, {"x": x}), b.run(None, {"x": x}), strict=True):
        assert np.abs(ra - rb).max() < 1e-5


def test_a_post_norm_encoder_keeps_its_fp32_function(graphs, texts, tmp_path) -> None:
    src = graphs["bert"]
    feeds = [feeds_for(src, texts[i : i + 2], 2, 9) for i in range(0, 16, 2)]
    dst = tmp_path / "smoothed.onnx"
    where = smooth_file(src, dst, feeds, 0.5)
    # Every weight product's input is smoothed; BERT's norms also feed the residual, so 1/s is a Mul.
    assert set(where) == set(weight_products(onnx.load(str(src)))) and set(where.values()) == {"mul"}
    before = {t.name for t in onnx.load(str(src)).graph.initializer}
    assert any(n.op_type == "MatMul" and n.input[1] not in before for n in onnx.load(str(dst)).graph.node)
    for feed in [*feeds, feeds_for(src, texts[100:103], 3, 16)]:
        ref, out = session(src).run(None, feed)[0], session(dst).run(None, feed)[0]
        assert np.abs(ref - out).max() < 1e-5


def test_unused_weights_are_dropped(graphs, texts, tmp_path) -> None:
    src = graphs["bert"]
    dst = tmp_path / "smoothed.onnx"
    smooth_file(src, dst, [feeds_for(src, texts[:2], 2, 9)], 0.8)
    g = onnx.load(str(dst)).graph
    used = {i for n in g.node for i in n.input}
    assert all(t.name in used for t in g.initializer)
    assert Path(dst).stat().st_size < 1.2 * Path(src).stat().st_size
