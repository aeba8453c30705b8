"""Dynamic int8: the graph runs, keeps fidelity, and its weights are about four times smaller."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from slimline.tasks import evaluate, metrics
from slimline.tasks.quantization.dynamic_int8 import DynamicInt8Config
from slimline.tasks.stages import quantize


@pytest.mark.parametrize("per_channel", [False, True])
def test_dynamic_int8(graphs, runs, tmp_path, texts, per_channel: bool) -> None:
    rec = quantize.apply(DynamicInt8Config(per_channel=per_channel), graphs["bert"], tmp_path / "q")
    assert rec["ops"].get("DynamicQuantizeLinear", 0) > 0
    runs(Path(rec["path"]), texts)
    base = evaluate.onnx_outputs(graphs["bert"], texts[:32])
    q = evaluate.onnx_outputs(Path(rec["path"]), texts[:32])
    assert 0.8 < metrics.fidelity(base, q) <= 1.0


def test_int8_weights_are_about_four_times_smaller(graphs, tmp_path) -> None:
    rec = quantize.apply(DynamicInt8Config(), graphs["bert"], tmp_path / "q")

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
    rec = quantize.apply(DynamicInt8Config(nodes_to_exclude=(target,)), graphs["bert"], tmp_path / "q")
    qg = onnx.load(rec["path"]).graph
    assert any(n.name == target and n.op_type == "MatMul" for n in qg.node)


def test_attention_products_are_quantized_when_asked(unfused, tmp_path, texts) -> None:
    def float_matmuls(cfg: DynamicInt8Config, name: str) -> int:
        rec = quantize.apply(cfg, unfused, tmp_path / name)
        base = evaluate.onnx_outputs(unfused, texts[:16])
        assert metrics.fidelity(base, evaluate.onnx_outputs(Path(rec["path"]), texts[:16])) > 0.95
        return sum(n.op_type == "MatMul" for n in onnx.load(rec["path"]).graph.node)

    assert float_matmuls(DynamicInt8Config(), "weights") == 4  # 2 layers x (QK^T, softmax x V)
    assert float_matmuls(DynamicInt8Config(attention=True), "all") == 0
    assert "attention" not in DynamicInt8Config().to_json()  # the stage ids of older graphs stay
