"""Quantization techniques (ONNX Runtime): one module each, found by tasks.catalog.

Import name: `slimline.tasks.quantization` (this folder is `tasks/quantization/` in the repository).

A module holds a QuantizeConfig subclass and
`apply(cfg, src, dst, *, calibration, device, max_length) -> dict | None`, bound to it with
`@register_technique` (tasks/techniques.py), which writes the quantized graph at `dst` from the
graph at `src` (a private copy: ORT writes scratch files beside it) and may return fields for the
stage record (the sensitivity table of `exclude: {auto: k}`).

Settings that several methods share are declared once, on a shared base, and read as attributes:
`Int8Config` (_mixed.py: per_channel, reduce_range, nodes_to_exclude, exclude) for the int8
methods that quantize activations too, `WeightOnlyConfig` (int4_weight_only.py: block_size,
symmetric, accuracy_level) for the MatMulNBits ones.
"""

from typing import ClassVar

import onnx

from slimline.tasks.base import TechniqueConfig

# The fused com.microsoft ops defeat ONNX shape inference; without a default tensor type ORT's
# int8 quantizers then fail on tensors whose type they cannot infer.
ORT_EXTRA_OPTIONS = {"DefaultTensorType": onnx.TensorProto.FLOAT}


class QuantizeConfig(TechniqueConfig):
    """The config of a quantization technique (stage "quantize": it turns an ONNX graph into another)."""

    stage: ClassVar = "quantize"
