"""Sensitivity-guided mixed precision: the table, and `exclude: {auto: k}` keeping its top k in fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimline.tasks.graph import read_meta
from slimline.tasks.quantization.dynamic_int8 import DynamicInt8Config
from slimline.tasks.quantization.static_int8 import StaticInt8Config
from slimline.tasks.sensitivity import matmul_sensitivity, weight_matmuls, weight_products
from slimline.tasks.stages import quantize


def _fp32_weight_matmuls(path: Path) -> set[str]:
    """Names of MatMuls that still multiply by a float initializer (left in fp32)."""
    model = onnx.load(str(path))
    return {n.name for n, _ in weight_matmuls(model)}


def test_table_has_one_finite_row_per_weight_matmul_sorted(graphs, texts) -> None:
    table = matmul_sensitivity(graphs["bert"], texts[:8], 16)
    names = _fp32_weight_matmuls(graphs["bert"])
    assert {r["node"] for r in table} == names and len(table) == len(names) > 4
    scores = [r["score"] for r in table]
    assert all(np.isfinite(s) and s >= 0 for s in scores) and scores == sorted(scores, reverse=True)
    # Finer weight scales can only help: per-channel errors are no larger in total.
    pc = matmul_sensitivity(graphs["bert"], texts[:8], 16, per_channel=True)
    assert sum(r["score"] for r in pc) <= sum(scores) * 1.01


@pytest.mark.parametrize("cls", [DynamicInt8Config, StaticInt8Config])
def test_auto_excludes_exactly_the_top_k_of_the_table(graphs, texts, tmp_path, cls) -> None:
    rec = quantize.apply(
        cls(exclude={"auto": 2}), graphs["bert"], tmp_path / "q", calibration=texts[:8], max_length=16
    )
    table = rec["sensitivity"]
    top2 = [r["node"] for r in table[:2]]
    assert rec["excluded"] == top2
    # Exactly those two still multiply by fp32 weights; every other weight MatMul is quantized.
    assert _fp32_weight_matmuls(Path(rec["path"])) == set(top2)


def test_auto_zero_is_plain_int8_and_unset_exclude_keeps_old_ids(graphs, texts, tmp_path) -> None:
    plain = quantize.apply(DynamicInt8Config(), graphs["bert"], tmp_path / "a")
    zero = quantize.apply(
        DynamicInt8Config(exclude={"auto": 0}), graphs["bert"], tmp_path / "b", calibration=texts[:8]
    )
    assert plain["ops"] == zero["ops"] and zero["excluded"] == [] and "sensitivity" not in plain
    assert "exclude" not in DynamicInt8Config().to_json()
    assert DynamicInt8Config(exclude={"auto": 2}).label() == "dynamic-int8(exclude=auto2)"
    with pytest.raises(ValueError):
        DynamicInt8Config(exclude={"auto": -1})


def test_a_weight_outlier_makes_its_matmul_more_sensitive(graphs, texts, tmp_path) -> None:
    model = onnx.load(str(graphs["bert"]))
    table = matmul_sensitivity(graphs["bert"], texts[:8], 16)
    least = table[-1]["node"]
    init = next(w for n, w in weight_matmuls(model) if n.name == least)
    w = numpy_helper.to_array(init).copy()
    w[0, 0] = 100 * np.abs(w).max()  # one huge weight stretches the per-tensor scale
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    path = tmp_path / "outlier" / "model.onnx"
    path.parent.mkdir()
    for f in graphs["bert"].parent.iterdir():  # the tokenizer and meta.json travel with the graph
        if f.name != "model.onnx":
            (path.parent / f.name).write_bytes(f.read_bytes())
    onnx.save(model, str(path))
    after = {r["node"]: r["score"] for r in matmul_sensitivity(path, texts[:8], 16)}
    assert after[least] > 3 * table[-1]["score"] and max(after, key=after.get) == least


@pytest.fixture(scope="module")
def gemm_graph(graphs, tmp_path_factory) -> Path:
    """A hand-built graph with the bert graph's inputs and tokenizer: embedding, a MatMul on
    (batch, seq, 16), mean over the sequence, then two Gemm layers with transposed weights (the
    layout of a classifier head); the last Gemm's weight has an outlier."""
    rng = np.random.default_rng(0)
    names = read_meta(graphs["bert"])["inputs"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"]) for n in names]
    w2 = rng.normal(size=(3, 16)).astype(np.float32)
    w2[0, 0] = 50.0
    weights = {
        "emb": rng.normal(size=(30522, 16)).astype(np.float32),
        "w0": rng.normal(size=(16, 16)).astype(np.float32),
        "w1": rng.normal(size=(16, 16)).astype(np.float32),  # (out, in): transB
        "b1": np.zeros(16, np.float32),
        "w2": w2,
        "b2": np.zeros(3, np.float32),
    }
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"], name="embed"),
        helper.make_node("MatMul", ["e", "w0"], ["h0"], name="mm0"),
        helper.make_node("ReduceMean", ["h0"], ["pooled"], name="pool", axes=[1], keepdims=0),
        helper.make_node("Gemm", ["pooled", "w1", "b1"], ["h1"], name="gemm1", transB=1),
        helper.make_node("Gemm", ["h1", "w2", "b2"], ["logits"], name="gemm2", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "gemm",
        inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    out = tmp_path_factory.mktemp("gemm") / "model.onnx"
    onnx.save(model, str(out))
    for f in graphs["bert"].parent.iterdir():  # meta.json and the tokenizer
        if not f.name.startswith("model.onnx"):
            (out.parent / f.name).write_bytes(f.read_bytes())
    return out


def test_gemm_rows_are_static_only_and_weights_read_as_in_by_out(gemm_graph, texts) -> None:
    model = onnx.load(str(gemm_graph))
    assert [p.node.name for p in weight_products(model)] == ["mm0"]  # dynamic int8 leaves Gemm alone
    table = matmul_sensitivity(gemm_graph, texts[:8], 16, op_types=("MatMul", "Gemm", "Gather"))
    assert {r["node"]: r["weight_shape"] for r in table} == {
        "mm0": [16, 16],
        "gemm1": [16, 16],
        "gemm2": [16, 3],
    }
    assert table[0]["node"] == "gemm2"  # the outlier weight
    assert [r["node"] for r in matmul_sensitivity(gemm_graph, texts[:8], 16)] == ["mm0"]


def test_static_auto_can_keep_a_gemm_in_fp32(gemm_graph, texts, tmp_path) -> None:
    rec = quantize.apply(
        StaticInt8Config(exclude={"auto": 1}),
        gemm_graph,
        tmp_path / "q",
        calibration=texts[:8],
        max_length=16,
    )
    assert rec["excluded"] == ["gemm2"]
    quantized = onnx.load(rec["path"])
    kept = {p.node.name for p in weight_products(quantized, ("MatMul", "Gemm"))}
    assert kept == {"gemm2"}  # gemm1 and mm0 read their weights through DequantizeLinear
    plain = quantize.apply(
        StaticInt8Config(), gemm_graph, tmp_path / "p", calibration=texts[:8], max_length=16
    )
    assert not weight_products(onnx.load(plain["path"]), ("MatMul", "Gemm"))  # without it, all three are int8
