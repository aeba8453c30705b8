"""The int8 recipes a user reaches for first: the peers every run times beside its own pick.

Each recipe is what a one-line call of another tool does, rebuilt with ONNX Runtime's own
quantization API (Optimum cannot be a dependency: optimum-onnx pins transformers < 4.58):

- `ort-default`: `onnxruntime.quantization.quantize_dynamic(src, dst)` with every default
  (onnxruntime 1.31.1, quantization/quantize.py): the IntegerOps registry's op types (Conv, MatMul,
  Attention, LSTM, Gather, Transpose, EmbedLayerNormalization), one scale per tensor, symmetric
  s8 weights, asymmetric u8 activations, `MatMulConstBOnly=True` (a MatMul of two activations,
  attention's QK^T and softmax·V, stays in float).
- `optimum-avx512_vnni`, `optimum-avx2`, `optimum-arm64`: Optimum's
  `AutoQuantizationConfig.<preset>(is_static=False)` run by `ORTQuantizer.quantize`
  (huggingface/optimum-onnx 1939f27a1d04, optimum/onnxruntime/configuration.py and
  quantization.py; the same in optimum v1.27.0), which sentence-transformers'
  `export_dynamic_quantized_onnx_model(model, "<preset>")` calls (backend/quantize.py). Per-channel
  weights, `reduce_range` off, symmetric weights (s8; u8 for avx2), asymmetric u8 activations, the
  same op types, and no `MatMulConstBOnly`, which ORT then reads as False: the attention MatMuls
  are quantized too, each input by its own DynamicQuantizeLinear.

They quantize the same optimized fp32 graph slimline's own int8 variants start from, so a row's
difference from a peer is the recipe alone. `optimum-auto` (in the spec's `baselines:`) is the
preset for the CPU the run plans on (tasks.cpu_probe).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import onnx

from slimline.tasks.quantization import ORT_EXTRA_OPTIONS, QuantizeConfig
from slimline.tasks.techniques import register_technique

Recipe = Literal["ort-default", "optimum-avx512_vnni", "optimum-avx2", "optimum-arm64"]
RECIPES: tuple[str, ...] = Recipe.__args__
SUBGRAPH_OPS = ("If", "Loop", "Scan", "SequenceMap")  # Optimum quantizes inside them when present


class PeerInt8Config(QuantizeConfig):
    """A peer's one-line int8 recipe (ONNX Runtime's defaults or an Optimum preset): `baselines:`."""

    method: Literal["peer-int8"] = "peer-int8"
    recipe: Recipe
    example: ClassVar = {"recipe": "ort-default"}


def optimum_preset(cpu_flags: str, machine: str = "") -> str:
    """The Optimum preset a user picks for this CPU: `optimum-auto` in the spec."""
    flags = set(cpu_flags.split())
    if "avx512_vnni" in flags:
        return "optimum-avx512_vnni"
    if machine in ("aarch64", "arm64") or "asimd" in flags:
        return "optimum-arm64"
    return "optimum-avx2"


@register_technique(PeerInt8Config)
def apply(cfg: PeerInt8Config, src: Path, dst: Path, **_: object) -> None:
    """Quantize `src` into `dst` as the recipe's one-liner would."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if cfg.recipe == "ort-default":
        quantize_dynamic(str(src), str(dst), extra_options=dict(ORT_EXTRA_OPTIONS))
        return
    nodes = onnx.load(str(src), load_external_data=False).graph.node
    subgraphs = any(n.op_type in SUBGRAPH_OPS for n in nodes)
    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QUInt8 if cfg.recipe == "optimum-avx2" else QuantType.QInt8,
        extra_options={
            **ORT_EXTRA_OPTIONS,
            "MatMulConstBOnly": False,
            "WeightSymmetric": True,
            "ActivationSymmetric": False,
            "EnableSubgraph": subgraphs,
        },
    )
