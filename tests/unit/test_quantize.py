"""Quantized graphs run, contain the expected operators, and int8 weights are ~4x smaller."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from tasks import evaluate, export, optimize, quantize
from tasks.base import SkipVariant, write_json
from tasks.export import ExportConfig, feeds_for
from tasks.runtime import session


@pytest.fixture(scope="module")
def graphs(tiny_model, tmp_path_factory, texts) -> dict[str, Path]:
    out = {}
    for family in ("bert", "llama"):
        task = "feature-extraction" if family == "bert" else "causal-lm"
        d = tmp_path_factory.mktemp(f"q-{family}")
        e = export.apply(
            ExportConfig(exporter="legacy"), tiny_model(family), d / "onnx", task=task, texts=texts
        )
        o = optimize.apply(optimize.OptimizeConfig(), Path(e["path"]), d / "opt", texts=texts)
        out[family] = Path(o["path"])
    return out


def _runs(path: Path, texts: list[str]) -> np.ndarray:
    out = session(path).run(None, feeds_for(path, texts, 2, 9))[0]
    assert np.isfinite(out).all()
    return out


@pytest.mark.parametrize("per_channel", [False, True])
def test_dynamic_int8(graphs, tmp_path, texts, per_channel: bool) -> None:
    rec = quantize.apply(quantize.DynamicInt8Config(per_channel=per_channel), graphs["bert"], tmp_path / "q")
    assert rec["ops"].get("DynamicQuantizeLinear", 0) > 0
    _runs(Path(rec["path"]), texts)
    base = evaluate.onnx_outputs(graphs["bert"], texts[:32])
    q = evaluate.onnx_outputs(Path(rec["path"]), texts[:32])
    assert 0.8 < evaluate.fidelity(base, q) <= 1.0


def test_int8_weights_are_about_four_times_smaller(graphs, tmp_path) -> None:
    rec = quantize.apply(quantize.DynamicInt8Config(), graphs["bert"], tmp_path / "q")

    def weight_bytes(path: Path, dtypes: set[int]) -> int:
        g = onnx.load(str(path)).graph
        return sum(len(t.raw_data) or 0 for t in g.initializer if t.data_type in dtypes)

    fp32 = weight_bytes(graphs["bert"], {onnx.TensorProto.FLOAT})
    int8 = weight_bytes(Path(rec["path"]), {onnx.TensorProto.INT8, onnx.TensorProto.UINT8})
    assert 3.5 < fp32 / int8 < 4.5
    assert rec["compression"] > 3.0  # the whole file, scales and biases included


def test_nodes_to_exclude(graphs, tmp_path) -> None:
    g = onnx.load(str(graphs["bert"])).graph
    target = next(n.name for n in g.node if n.op_type == "MatMul")
    rec = quantize.apply(
        quantize.DynamicInt8Config(nodes_to_exclude=(target,)), graphs["bert"], tmp_path / "q"
    )
    qg = onnx.load(rec["path"]).graph
    assert any(n.name == target and n.op_type == "MatMul" for n in qg.node)


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_int8_qdq(graphs, tmp_path, texts, method: str) -> None:
    cfg = quantize.StaticInt8Config(calibration=method, samples=8)
    rec = quantize.apply(cfg, graphs["bert"], tmp_path / "q", calibration=texts[200:])
    assert rec["ops"].get("QuantizeLinear", 0) > 0 and rec["ops"].get("DequantizeLinear", 0) > 0
    _runs(Path(rec["path"]), texts)
    # Only products with weights (and lookups) are quantized: the attention scores, and the
    # additive mask that joins them, stay in float.
    graph = onnx.load(rec["path"]).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    weights = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "MatMul" and not any(producer.get(i) == "DequantizeLinear" for i in node.input):
            assert not weights.intersection(node.input), f"{node.name} has a float weight"
        if node.op_type in ("Add", "Softmax"):
            assert all(producer.get(i) != "DequantizeLinear" for i in node.input), node.name


def test_static_without_calibration_text_fails(graphs, tmp_path) -> None:
    with pytest.raises(Exception, match="calibration"):
        quantize.apply(quantize.StaticInt8Config(), graphs["bert"], tmp_path / "q", calibration=[])


def test_int4_weight_only_on_decoder(graphs, tmp_path, texts) -> None:
    rec = quantize.apply(quantize.Int4Config(block_size=16), graphs["llama"], tmp_path / "q")
    assert rec["ops"].get("MatMulNBits", 0) > 0
    _runs(Path(rec["path"]), texts)


def test_fp16_is_refused_on_cpu(graphs, tmp_path) -> None:
    with pytest.raises(SkipVariant, match="CUDA"):
        quantize.apply(quantize.FP16Config(), graphs["bert"], tmp_path / "q", device="cpu")
    assert not (tmp_path / "q").exists()


def test_int4_without_matmul_weights_is_skipped(tmp_path) -> None:
    x = helper.make_tensor_value_info("input_ids", onnx.TensorProto.FLOAT, ["b", "s"])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["b", "s"])
    graph = helper.make_graph([helper.make_node("Relu", ["input_ids"], ["y"])], "g", [x], [y])
    d = tmp_path / "g"
    d.mkdir()
    onnx.save(helper.make_model(graph), d / "model.onnx")
    write_json(d / "meta.json", {"inputs": ["input_ids"], "task": "feature-extraction"})
    with pytest.raises(SkipVariant, match="no MatMul"):
        quantize.apply(quantize.Int4Config(), d / "model.onnx", tmp_path / "q")


def test_quantize_refuses_a_folder_without_meta(tmp_path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError):
        quantize.apply(quantize.DynamicInt8Config(), tmp_path / "model.onnx", tmp_path / "q")
