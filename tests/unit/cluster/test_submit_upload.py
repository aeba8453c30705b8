"""What `slimline submit` uploads: the files Ray's own packager puts in the job's working_dir zip."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import yaml

from slimline.cluster.submit import runtime_env, upload_plan
from slimline.pipelines.spec.spec import load_spec

SPEC = {
    "version": 1,
    "name": "tiny",
    "model": {"source": "/nonexistent/model", "task": "feature-extraction"},
    "artifacts": "./runs",
    "registry": {"tracking_uri": "sqlite:///store/track.sqlite"},
}


def _packaged(env: dict, out: Path) -> set[str]:
    """The file names Ray would zip for this runtime_env, honouring .gitignore as its Jobs client does."""
    from ray._private.runtime_env.packaging import _zip_files

    _zip_files(env["working_dir"], env["excludes"], str(out), include_gitignore=True)
    with zipfile.ZipFile(out) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")


KEPT = {
    "spec.yaml",
    "pkg/mod.py",
    "pkg/runs/keep.txt",
    "data/train.csv",
    "a.log",
    ".gitignore",
    "sub/.gitignore",
}
LEFT_OUT = {
    "runs/tiny-t1/manifest.json",  # the spec's artifact root, not called `artifacts`
    "store/track.sqlite",  # the spec's own tracking store, whatever its suffix
    "other.db",
    "mlruns/0/meta.yaml",
    "sub/mlartifacts/1/model.txt",
    ".env",
    ".env.local",
    "sub/.env.prod",
    ".venv/bin/python",
    ".git/HEAD",
    "pkg/__pycache__/mod.cpython-311.pyc",
    "secret.txt",  # the project's .gitignore
    "build/out.txt",
    "sub/b.log",  # a nested .gitignore, for its own folder only
}


@pytest.mark.parametrize("with_project", [False, True])
def test_upload_leaves_out_artifacts_stores_secrets_and_ignored_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_project: bool
) -> None:
    root = tmp_path / "proj"
    _touch(root, *KEPT, *LEFT_OUT)
    (root / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    (root / ".gitignore").write_text("secret.txt\n/build\n")
    (root / "sub" / ".gitignore").write_text("*.log\n")
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder, rel, excludes = upload_plan(root / "spec.yaml", load_spec(root / "spec.yaml"), with_project)
    assert (folder, rel) == (root.resolve(), "spec.yaml")
    assert _packaged(runtime_env(folder, excludes), tmp_path / "pkg.zip") == KEPT


def test_relative_artifacts_are_left_out_where_the_job_and_a_local_run_put_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job resolves ./out against its working directory (the spec's folder), a local run against
    # the cwd: both are left out, and a folder merely called `out` deeper down is not.
    root = tmp_path / "proj"
    _touch(root, "s.yaml", "out/a.json", "tools/out/b.json", "tools/run.py", "lib/out/c.json")
    (root / "s.yaml").write_text(yaml.safe_dump({**SPEC, "artifacts": "./out"}))
    monkeypatch.chdir(root / "tools")
    folder, rel, excludes = upload_plan(root / "s.yaml", load_spec(root / "s.yaml"), False)
    assert rel == "s.yaml"
    packaged = _packaged(runtime_env(folder, excludes), tmp_path / "p.zip")
    assert packaged == {"s.yaml", "tools/run.py", "lib/out/c.json"}


def test_an_artifact_root_holding_the_project_is_not_excluded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "proj"
    _touch(root, "spec.yaml", "pkg/mod.py")
    (root / "spec.yaml").write_text(yaml.safe_dump({**SPEC, "artifacts": str(tmp_path)}))
    monkeypatch.chdir(root)
    folder, _, excludes = upload_plan(root / "spec.yaml", load_spec(root / "spec.yaml"), False)
    assert _packaged(runtime_env(folder, excludes), tmp_path / "p.zip") == {"spec.yaml", "pkg/mod.py"}


def test_with_project_refuses_a_spec_outside_the_uploaded_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, unused_port: int
) -> None:
    project, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (elsewhere / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    monkeypatch.chdir(project)
    address = f"http://127.0.0.1:{unused_port}"  # refused before any request
    res = cli("submit", str(elsewhere / "spec.yaml"), "--address", address, "--with-project")
    assert res.returncode == 2
    line = res.stderr.strip()
    assert "\n" not in line and "--with-project" in line and "outside" in line and str(project) in line
    assert "unreachable" not in line
