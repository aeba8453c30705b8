"""The quantize stage: a folder that is not a slimline graph, and a config no technique owns."""

from __future__ import annotations

import pytest

from slimline.tasks.catalog import UnknownTechnique
from slimline.tasks.export import ExportConfig
from slimline.tasks.pruning.heads import HeadsConfig
from slimline.tasks.quantization.dynamic_int8 import DynamicInt8Config
from slimline.tasks.stages import quantize


def test_quantize_refuses_a_folder_without_meta(tmp_path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError):
        quantize.apply(DynamicInt8Config(), tmp_path / "model.onnx", tmp_path / "q")


@pytest.mark.parametrize("cfg", [HeadsConfig(amount=0.5), ExportConfig()])
def test_a_config_no_quantization_owns_is_an_error_not_a_fallback(tmp_path, cfg) -> None:
    with pytest.raises(UnknownTechnique, match="not a quantize technique"):
        quantize.apply(cfg, tmp_path / "model.onnx", tmp_path / "q")  # type: ignore[arg-type]
    assert not (tmp_path / "q").exists()
