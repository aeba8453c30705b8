"""Quantization techniques (ONNX Runtime): one module each, found by tasks.catalog.

Import name: `slimline.tasks.quantization` (this folder is `tasks/quantization/` in the repository).

A module holds `CONFIG` (a TechniqueConfig with stage "quantize") and
`apply(cfg, src, dst, *, calibration, device, max_length) -> dict | None`, which writes the quantized
graph at `dst` from the graph at `src` (a private copy: ORT writes scratch files beside it) and
may return fields for the stage record (the sensitivity table of `exclude: {auto: k}`).
"""

import onnx

# The fused com.microsoft ops defeat ONNX shape inference; without a default tensor type ORT's
# int8 quantizers then fail on tensors whose type they cannot infer.
ORT_EXTRA_OPTIONS = {"DefaultTensorType": onnx.TensorProto.FLOAT}
