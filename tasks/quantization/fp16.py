"""Half precision weights and activations, for the CUDA provider."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import onnx

from slimline.tasks.base import SkipVariant
from slimline.tasks.quantization import QuantizeConfig
from slimline.tasks.runtime import cuda_usable
from slimline.tasks.techniques import register_technique


class FP16Config(QuantizeConfig):
    """Half precision weights and activations (CUDA only: CPU kernels for fp16 are slower than fp32)."""

    needs_gpu: ClassVar = "fp16 needs a GPU task (resources.gpus_per_task > 0 on a cluster with GPUs)"
    method: Literal["fp16"] = "fp16"
    keep_io_types: bool = True


@register_technique(FP16Config)
def apply(cfg: FP16Config, src: Path, dst: Path, *, device: str, **_: object) -> None:
    """Convert the graph at `src` to fp16 (inputs and outputs stay fp32 by default)."""
    if device != "cuda" or not cuda_usable():
        raise SkipVariant("fp16 needs a CUDA device: ONNX Runtime's CPU provider runs fp16 slower than fp32")
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=cfg.keep_io_types)
    model.save_model_to_file(str(dst))
