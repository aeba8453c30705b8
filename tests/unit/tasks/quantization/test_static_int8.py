"""Static int8 (QDQ): calibrated on real text, weight products quantized, attention left in float
unless asked; calibration methods, symmetric activations, dedicated pairs and SmoothQuant."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from slimline.tasks import evaluate, export, metrics
from slimline.tasks.base import TaskError
from slimline.tasks.export import ExportConfig
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


def _activation_quantizers(path: Path) -> dict[str, tuple[float, int, int]]:
    """{quantized tensor: (scale, zero point, zero point's ONNX type)} of each activation quantizer."""
    g = onnx.load(str(path)).graph
    inits = {t.name: t for t in g.initializer}
    out = {}
    for n in g.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            zp = inits[n.input[2]]
            out[n.input[0]] = (
                float(numpy_helper.to_array(inits[n.input[1]])),
                int(numpy_helper.to_array(zp)),
                zp.data_type,
            )
    return out


def test_calibration_methods_give_different_ranges_on_skewed_activations(tiny_model, tmp_path, texts) -> None:
    # init 0.2: activations with a long tail (the default init is close to an identity map).
    e = export.apply(
        ExportConfig(exporter="legacy"),
        tiny_model("bert", init_range=0.2),
        tmp_path / "onnx",
        task="feature-extraction",
        texts=texts,
    )
    scales = {}
    for method in ("minmax", "entropy", "percentile"):
        cfg = StaticInt8Config(calibration=method, samples=32)
        if method == "percentile":
            cfg = StaticInt8Config(calibration=method, samples=32, percentile=99.9)
        rec = quantize.apply(cfg, Path(e["path"]), tmp_path / method, calibration=texts)
        scales[method] = {k: v[0] for k, v in _activation_quantizers(Path(rec["path"])).items()}
    assert scales["minmax"].keys() == scales["entropy"].keys() == scales["percentile"].keys()
    for method in ("entropy", "percentile"):
        # Each clips the tail minmax keeps: never a wider range, and narrower for some tensors.
        assert all(scales[method][k] <= scales["minmax"][k] * (1 + 1e-6) for k in scales["minmax"]), method
        assert sum(scales[method][k] < 0.99 * scales["minmax"][k] for k in scales["minmax"]) >= 1, method
    assert scales["entropy"] != scales["percentile"]


@pytest.mark.parametrize(("activations", "zero_point", "dtype"), [("u8", 128, 2), ("s8", 0, 3)])
def test_symmetric_activations(
    graphs, tmp_path, texts, activations: str, zero_point: int, dtype: int
) -> None:
    cfg = StaticInt8Config(samples=8, activations=activations, activation_symmetric=True)
    rec = quantize.apply(cfg, graphs["bert"], tmp_path / "q", calibration=texts[200:])
    quantizers = _activation_quantizers(Path(rec["path"]))
    assert quantizers and {(zp, t) for _, zp, t in quantizers.values()} == {(zero_point, dtype)}


def test_dedicated_pairs_and_attention_products(unfused, runs, tmp_path, texts) -> None:
    def count(cfg: StaticInt8Config, name: str) -> tuple[int, int]:
        rec = quantize.apply(cfg, unfused, tmp_path / name, calibration=texts[200:])
        runs(Path(rec["path"]), texts)
        g = onnx.load(rec["path"]).graph
        producer = {o: n.op_type for n in g.node for o in n.output}
        float_mm = [
            n
            for n in g.node
            if n.op_type == "MatMul" and "DequantizeLinear" not in {producer.get(i) for i in n.input}
        ]
        return rec["ops"]["QuantizeLinear"], len(float_mm)

    shared, float_default = count(StaticInt8Config(samples=8), "default")
    dedicated, _ = count(StaticInt8Config(samples=8, dedicated_qdq=True), "dedicated")
    # Q, K and V read one normalized tensor: one quantizer each instead of one shared.
    assert dedicated > shared
    _, float_all = count(StaticInt8Config(samples=8, weight_matmuls_only=False), "attention")
    assert float_default == 4 and float_all == 0  # 2 layers x (QK^T, softmax x V)


def test_smoothquant_before_calibration_keeps_fidelity(graphs, tmp_path, texts) -> None:
    rec = quantize.apply(
        StaticInt8Config(samples=8, smooth=0.5), graphs["bert"], tmp_path / "q", calibration=texts[200:]
    )
    assert rec["smoothquant"]["alpha"] == 0.5 and rec["smoothquant"]["inputs"] > 0
    assert not list((tmp_path / "q").glob("smoothed*"))  # scratch files gone
    base = evaluate.onnx_outputs(graphs["bert"], texts[:32])
    assert metrics.fidelity(base, evaluate.onnx_outputs(Path(rec["path"]), texts[:32])) > 0.95


def test_new_settings_keep_the_old_stage_ids() -> None:
    cfg = StaticInt8Config()
    assert not {"activations", "activation_symmetric", "dedicated_qdq", "smooth"} & cfg.to_json().keys()
    assert cfg.label() == "static-int8" and StaticInt8Config(smooth=0.5).label() == "static-int8(smooth=0.5)"
    assert StaticInt8Config(smooth=0.5).digest() != cfg.digest()
    with pytest.raises(ValueError, match="calibration: percentile only"):
        StaticInt8Config(percentile=99.9)


def test_float_after_keeps_the_products_an_op_type_feeds_in_float(graphs, tmp_path, texts) -> None:
    src = graphs["bert"]
    g = onnx.load(str(src)).graph
    made_by = {o: n.op_type for n in g.node for o in n.output}
    weights = {t.name for t in g.initializer}
    down = {
        n.name
        for n in g.node
        if n.op_type == "MatMul" and n.input[1] in weights and made_by.get(n.input[0]) == "BiasGelu"
    }
    assert len(down) == 2  # the FFN down projection of each of the tiny model's 2 layers
    cfg = StaticInt8Config(samples=8, float_after=("BiasGelu", "Gelu"))
    rec = quantize.apply(cfg, src, tmp_path / "q", calibration=texts[200:])
    assert set(rec["float_after"]) == down
    q = onnx.load(rec["path"]).graph
    producer = {o: n.op_type for n in q.node for o in n.output}
    for n in q.node:
        if n.name in down:  # still a float product of a float weight, its input not dequantized
            assert n.op_type == "MatMul" and n.input[1] in {t.name for t in q.initializer}
            assert producer.get(n.input[0]) != "DequantizeLinear"
    assert "float_after" not in StaticInt8Config().to_json()
