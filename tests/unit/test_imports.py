"""The one-way dependency rule, checked on the installed package."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["tasks", "tasks.catalog", "tasks.evaluate", "tasks.quantize", "pipelines", "pipelines.cli"]
)
def test_importing_does_not_import_ray_or_mlflow(module: str) -> None:
    code = (
        f"import sys, {module}; bad = [m for m in ('ray', 'mlflow') if m in sys.modules]; "
        "print(bad); sys.exit(bool(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tasks_source_never_names_ray_or_mlflow() -> None:
    import pathlib
    import re

    import tasks

    root = pathlib.Path(tasks.__file__).parent
    for f in root.rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+(ray|mlflow)\b", f.read_text(), re.M), f


def test_tests_run_against_the_installed_package() -> None:
    import tasks

    assert "site-packages" in tasks.__file__ or "dist-packages" in tasks.__file__, tasks.__file__
