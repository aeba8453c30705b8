"""The peers' one-line int8 recipes produce the node patterns their documented settings imply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from slimline.tasks import evaluate, metrics
from slimline.tasks.quantization.peers import RECIPES, PeerInt8Config, optimum_preset
from slimline.tasks.stages import quantize


def _matmuls(path: Path) -> tuple[int, int]:
    """(MatMuls with a constant weight, MatMuls of two activations) in a float graph."""
    g = onnx.load(str(path)).graph
    inits = {t.name for t in g.initializer}
    mm = [n for n in g.node if n.op_type == "MatMul"]
    return sum(n.input[1] in inits for n in mm), sum(n.input[1] not in inits for n in mm)


def _weights(path: Path) -> list[tuple[int, np.ndarray]]:
    """(dtype, zero points) of the constant weight of each MatMulInteger."""
    g = onnx.load(str(path)).graph
    inits = {t.name: t for t in g.initializer}
    out = []
    for n in g.node:
        if n.op_type == "MatMulInteger" and n.input[1] in inits:
            zp = (
                numpy_helper.to_array(inits[n.input[3]]) if len(n.input) > 3 and n.input[3] in inits else None
            )
            out.append((inits[n.input[1]].data_type, zp))
    return out


@pytest.fixture(scope="module")
def quantized(unfused, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("peers")
    return {r: Path(quantize.apply(PeerInt8Config(recipe=r), unfused, root / r)["path"]) for r in RECIPES}


def test_ort_default_quantizes_weights_per_tensor_and_leaves_attention_products_in_float(
    unfused, quantized
) -> None:
    const, act = _matmuls(unfused)
    assert const > 0 and act > 0  # the tiny encoder has both kinds
    g = onnx.load(str(quantized["ort-default"])).graph
    ops = [n.op_type for n in g.node]
    assert ops.count("MatMulInteger") == const and ops.count("MatMul") == act
    for dtype, zp in _weights(quantized["ort-default"]):
        assert dtype == onnx.TensorProto.INT8 and zp is not None and zp.size == 1 and not zp.any()


@pytest.mark.parametrize("recipe", ["optimum-avx512_vnni", "optimum-arm64", "optimum-avx2"])
def test_optimum_presets_quantize_every_matmul_per_channel(unfused, quantized, recipe) -> None:
    const, act = _matmuls(unfused)
    g = onnx.load(str(quantized[recipe])).graph
    ops = [n.op_type for n in g.node]
    assert ops.count("MatMulInteger") == const + act and ops.count("MatMul") == 0  # attention included
    weights = _weights(quantized[recipe])
    assert len(weights) == const
    for dtype, zp in weights:
        assert zp is not None and zp.size > 1  # one scale and zero point per output channel
        if recipe == "optimum-avx2":  # u8 weights, symmetric: the zero point is the middle, 128
            assert dtype == onnx.TensorProto.UINT8 and (zp == 128).all()
        else:
            assert dtype == onnx.TensorProto.INT8 and not zp.any()


def test_every_recipe_keeps_the_function_and_vnni_and_arm64_give_the_same_graph(
    unfused, quantized, texts
) -> None:
    base = evaluate.onnx_outputs(unfused, texts[:16])
    for recipe, path in quantized.items():
        assert 0.8 < metrics.fidelity(base, evaluate.onnx_outputs(path, texts[:16])) <= 1.0, recipe
    vnni, arm = (onnx.load(str(quantized[r])).graph for r in ("optimum-avx512_vnni", "optimum-arm64"))
    assert [n.op_type for n in vnni.node] == [n.op_type for n in arm.node]
    assert {t.name: t.raw_data for t in vnni.initializer} == {t.name: t.raw_data for t in arm.initializer}


def test_optimum_auto_picks_the_preset_for_this_cpu() -> None:
    assert optimum_preset("fma avx2 avx512f avx512_vnni") == "optimum-avx512_vnni"
    assert optimum_preset("fma avx2") == "optimum-avx2"
    assert optimum_preset("fp asimd", "aarch64") == "optimum-arm64"
