"""The one-way dependency rule, enforced: import-linter's contracts and an import graph without cycles."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

import slimline

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    # Run from a folder without the source tree: lint-imports puts its working folder on sys.path.
    return subprocess.run(
        [str(LINT), "--no-cache", str(PYPROJECT)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def test_the_installed_package_keeps_every_contract(tmp_path: Path) -> None:
    proc = _lint(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


# One leak per layer, each in its own copy of the package's modules; one lint run checks them all.
LEAKS = {
    "tasks/_leak.py": "from slimline.pipelines.run import records\n",
    "pipelines/_leak.py": "def f():\n    import mlflow\n",
    "cluster/_leak.py": "from slimline.registry import store\n",
    "registry/_leak.py": "from slimline import api\n",
}


def test_a_deliberate_violation_breaks_its_contract(tmp_path: Path) -> None:
    # The installed package keeps every contract (above): in a copy of it, the leaks break them.
    copy = tmp_path / "site" / "slimline"
    shutil.copytree(Path(slimline.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for where, line in LEAKS.items():
        (copy / where).write_text(line)
    proc = _lint(tmp_path, tmp_path / "site")
    broken = [ln.split(":")[0] for ln in proc.stdout.splitlines() if " BROKEN" in ln]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # Through the API the registry also reaches cluster: that leak breaks the last two contracts.
    assert broken == ["tasks", "pipelines", "cluster and registry", "adapters"], proc.stdout
    for where in LEAKS:  # each leak is named in the report, as the import that breaks its contract
        assert f"slimline.{where[:-3].replace('/', '.')}" in proc.stdout, where


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_among_our_modules() -> None:
    # Every import counts, lazy ones inside functions too; only `if TYPE_CHECKING:` blocks do not run.
    graph = grimp.build_graph("slimline", exclude_type_checking_imports=True)
    assert len(graph.modules) > 100  # the whole installed package, not an empty folder
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=a, imported=b)
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]
