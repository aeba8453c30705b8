"""`make gpu-check` on a machine without a GPU: it says so and succeeds (the GPU path needs a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def test_without_a_gpu_there_is_nothing_to_check() -> None:
    from slimline.tasks.runtime import cuda_usable

    if cuda_usable():
        pytest.skip("this machine has a GPU: `make gpu-check` runs the real checks")
    plain = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and plain.stdout.strip() == "no GPU: nothing to check", plain.stderr
    as_json = subprocess.run(
        [sys.executable, str(SCRIPT), "--json"], capture_output=True, text=True, timeout=120
    )
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == {"gpu": False, "checks": {}}


def test_doctor_marks_providers_that_cannot_run_here() -> None:
    """issue 26: doctor listed TensorRT and CUDA beside `cuda usable False`."""
    from slimline.tasks.runtime import provider_line

    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    without = provider_line(listed, cuda=False)
    assert "TensorrtExecutionProvider (unusable: no CUDA device)" in without
    assert "CUDAExecutionProvider (unusable" in without and without.endswith(", CPUExecutionProvider")
    assert provider_line(listed, cuda=True) == ", ".join(listed)
