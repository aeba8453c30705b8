"""One import package, `slimline`, and the one-way dependency rule, checked on the installed package."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

import slimline.tasks


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=cwd)


def test_the_wheel_installs_one_top_level_package() -> None:
    assert distribution("slimline").read_text("top_level.txt").split() == ["slimline"]
    files = {str(f).split("/")[0] for f in distribution("slimline").files or []}
    assert not files & {"tasks", "pipelines", "cluster", "registry"}


def test_generic_names_stay_free_for_the_user(tmp_path: Path) -> None:
    # A user's own tasks.py and registry/ (common names) import as theirs, beside ours.
    (tmp_path / "tasks.py").write_text("MINE = True\n")
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "__init__.py").write_text("MINE = True\n")
    code = "import tasks, registry, slimline.tasks.catalog as c; "
    code += "print(tasks.MINE, registry.MINE, c.techniques())"
    proc = _python(code, tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("True True {")
    assert "name='heads'" in proc.stdout, proc.stderr
    proc = _python("import tasks", tmp_path.parent)
    assert proc.returncode == 1 and "No module named 'tasks'" in proc.stderr


def test_python_dash_m_slimline(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "slimline", "techniques", "--markdown"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "| prune | `heads` |" in proc.stdout, proc.stderr


@pytest.mark.parametrize(
    "module",
    [
        "slimline",
        "slimline.api",
        "slimline.tasks",
        "slimline.tasks.catalog",
        "slimline.tasks.stages.quantize",
        "slimline.pipelines",
        "slimline.pipelines.run.run",
        "slimline.cli.main",
    ],
)
def test_importing_does_not_import_ray_or_mlflow(module: str, tmp_path: Path) -> None:
    code = (
        f"import sys, {module}, slimline; slimline.run; "
        "bad = [m for m in ('ray', 'mlflow') if m in sys.modules]; "
        "print(bad); sys.exit(bool(bad))"
    )
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tasks_import_nothing_of_ours_but_tasks() -> None:
    root = Path(slimline.tasks.__file__).parent
    for f in root.rglob("*.py"):
        src = f.read_text()
        assert not re.search(r"^\s*(import|from)\s+(ray|mlflow)\b", src, re.M), f
        assert not re.search(r"^\s*from\s+\.+(pipelines|cluster|registry)\b", src, re.M), f
        assert not re.search(r"^\s*(import|from)\s+slimline\.(pipelines|cluster|registry)\b", src, re.M), f


def test_tests_run_against_the_installed_package() -> None:
    assert "site-packages" in slimline.tasks.__file__ or "dist-packages" in slimline.tasks.__file__


def test_an_uploaded_source_tree_runs_as_the_package(tmp_path: Path) -> None:
    # `slimline submit --with-project` uploads the checkout and runs `python -m slimline` in it.
    root = Path(__file__).resolve().parents[2]
    for folder in ("slimline", "pipelines", "tasks", "cluster", "registry"):
        # symlinks=True: as a git checkout has them (slimline/tasks -> ../tasks, ...)
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(root / folder, tmp_path / folder, ignore=ignore, symlinks=True)
    proc = _python(
        "import pathlib, slimline.tasks.catalog as c;"
        " print(pathlib.Path(c.__file__).resolve(), sorted(c.techniques())[0])",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / "tasks" / "catalog.py"), "distill"]
