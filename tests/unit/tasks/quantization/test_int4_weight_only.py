"""Weight-only int4: MatMulNBits on a decoder; a graph without MatMul weights is skipped."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import helper

from slimline.tasks.base import SkipVariant, write_json
from slimline.tasks.quantization.int4_weight_only import Int4Config
from slimline.tasks.stages import quantize


def test_int4_weight_only_on_decoder(graphs, runs, tmp_path, texts) -> None:
    rec = quantize.apply(Int4Config(block_size=16), graphs["llama"], tmp_path / "q")
    assert rec["ops"].get("MatMulNBits", 0) > 0
    runs(Path(rec["path"]), texts)


def test_int4_without_matmul_weights_is_skipped(tmp_path) -> None:
    x = helper.make_tensor_value_info("input_ids", onnx.TensorProto.FLOAT, ["b", "s"])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["b", "s"])
    graph = helper.make_graph([helper.make_node("Relu", ["input_ids"], ["y"])], "g", [x], [y])
    d = tmp_path / "g"
    d.mkdir()
    onnx.save(helper.make_model(graph), d / "model.onnx")
    write_json(d / "meta.json", {"inputs": ["input_ids"], "task": "feature-extraction"})
    with pytest.raises(SkipVariant, match="no MatMul"):
        quantize.apply(Int4Config(), d / "model.onnx", tmp_path / "q")
