"""fp16 needs a GPU: the config says so to the planner, and the technique refuses a CPU."""

from __future__ import annotations

import pytest

from slimline.tasks.base import SkipVariant
from slimline.tasks.quantization.fp16 import FP16Config
from slimline.tasks.stages import quantize


def test_fp16_is_refused_on_cpu(graphs, tmp_path) -> None:
    assert FP16Config.needs_gpu and "GPU" in FP16Config.needs_gpu
    with pytest.raises(SkipVariant, match="CUDA"):
        quantize.apply(FP16Config(), graphs["bert"], tmp_path / "q", device="cpu")
    assert not (tmp_path / "q").exists()
