"""Static int8 (QDQ): calibrated on real text, weight products quantized, attention left in float."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from slimline.tasks.base import TaskError
from slimline.tasks.quantization.static_int8 import StaticInt8Config
from slimline.tasks.stages import quantize


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_int8_qdq(graphs, runs, tmp_path, texts, method: str) -> None:
    cfg = StaticInt8Config(calibration=method, samples=8)
    rec = quantize.apply(cfg, graphs["bert"], tmp_path / "q", calibration=texts[200:])
    assert rec["ops"].get("QuantizeLinear", 0) > 0 and rec["ops"].get("DequantizeLinear", 0) > 0
    runs(Path(rec["path"]), texts)
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
    assert StaticInt8Config().needs_calibration()
    with pytest.raises(TaskError, match="calibration"):
        quantize.apply(StaticInt8Config(), graphs["bert"], tmp_path / "q", calibration=[])
    assert not (tmp_path / "q").exists()
