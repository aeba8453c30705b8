"""GGUF files are checked at `validate` (issue 25): header, tensor table and architecture, read
without loading weights; a bad file is exit 2 naming the file, before any cluster starts."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

gguf = pytest.importorskip("gguf")  # the llm extra, which `make test` installs


def _gguf(path: Path, arch: str = "llama") -> Path:
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_tensor("token_embd.weight", np.ones((64, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _validate(cli, tmp_path: Path, model: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump({"version": 1, "name": "g", "model": {"source": str(model), "task": "causal-lm"}})
    )
    return cli("validate", str(spec))


def test_bad_gguf_files_fail_validate_with_one_line_naming_them(cli, tmp_path: Path) -> None:
    good = _gguf(tmp_path / "good.gguf")
    assert _validate(cli, tmp_path, good).returncode == 0
    data = good.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 1000])  # the weights cut short
    tiny = tmp_path / "tiny.gguf"
    tiny.write_bytes(data[:100])
    count = tmp_path / "count.gguf"
    count.write_bytes(data[:8] + struct.pack("<Q", 2**50) + data[16:])  # a corrupt tensor count
    odd_arch = _gguf(tmp_path / "arch.gguf", arch="not-a-model")
    cases = {
        cut: "cut off",
        tiny: "cut off or corrupt",
        count: "cut off or corrupt",
        odd_arch: "architecture 'not-a-model' cannot be loaded",
    }
    for path, says in cases.items():
        res = _validate(cli, tmp_path, path)
        assert res.returncode == 2, (path, res.stdout)
        line = res.stderr.strip()
        assert "\n" not in line and str(path) in line and says in line, line
