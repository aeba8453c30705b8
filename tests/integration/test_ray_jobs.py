"""Cluster submission against a real `ray start --head` on 127.0.0.1, and a two-node Ray cluster."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

VARIANTS = {
    "pruning": ["none", {"method": "ffn", "amount": 0.5}],
    "quantization": ["none", {"method": "dynamic-int8", "per_channel": True}],
}
SELECT = {"constraints": {"fidelity": {"min": 0.5}}, "objectives": ["size_mb"], "top_k": 1}


def _pids_of(temp_dir: str) -> list[int]:
    """Process ids whose command line names the head's own temp dir (and nothing else's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if temp_dir.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _stop(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.2)


@pytest.fixture(scope="module")
def ray_head(port_factory):
    """A Ray head of its own: free ports, its own temp dir, stopped by its own processes' ids."""
    temp_dir = tempfile.mkdtemp(prefix="slr-", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dashboard = port_factory(), port_factory()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    cmd = [str(bin_dir / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    cmd += [
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dashboard),
        "--include-dashboard",
        "true",
    ]
    cmd += ["--num-cpus", "2", "--temp-dir", temp_dir, "--disable-usage-stats"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=180)
    try:
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        _stop(_pids_of(temp_dir))


def _spec_file(tmp_path: Path, tiny_model, tiny_spec, artifacts: Path | None = None) -> tuple[Path, str]:
    store = f"sqlite:///{tmp_path / 'registry.db'}"
    spec = tiny_spec(
        tiny_model("bert"),
        "feature-extraction",
        artifacts or tmp_path / "artifacts",  # absolute: the job runs in an uploaded copy of its folder
        variants=VARIANTS,
        select=SELECT,
        registry={"model_name": "tiny-job", "tracking_uri": store},
    )
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    # The user's own modules under slimline's generic folder names travel with the job and come
    # first on the workers' import path: they must never shadow slimline's own subpackages.
    shadow = "raise ImportError('the user module was imported instead of slimline')\n"
    (folder / "tasks.py").write_text(shadow)
    (folder / "registry").mkdir()
    (folder / "registry" / "__init__.py").write_text(shadow)
    (folder / "pipelines.py").write_text(shadow)
    return folder / "spec.yaml", store


def _manifests(root: Path) -> set[Path]:
    return set(root.glob("tiny-*/manifest.json"))


def test_submit_wait_logs_and_resubmit(
    ray_head, tiny_model, tiny_spec, slimline, tmp_path, shared_artifacts
) -> None:
    spec, store = _spec_file(tmp_path, tiny_model, tiny_spec, shared_artifacts)
    first = slimline("submit", str(spec), "--address", ray_head, "--wait", "--tick-id", "t1", timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    job_id = first.stdout.splitlines()[0].split(": ", 1)[1]
    assert first.stdout.rstrip().endswith(f"{job_id}: SUCCEEDED")
    assert "registered tiny-job version 1 [champion]" in first.stdout  # the job's own output, streamed

    manifest = json.loads((shared_artifacts / "tiny-t1" / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["submission_id"] == job_id
    assert manifest["tick_id"] == "t1" and manifest["run_id"] == "tiny-t1"
    versions = MlflowClient(tracking_uri=store, registry_uri=store).search_model_versions("name='tiny-job'")
    assert len(versions) == 1

    logs = slimline("jobs", "logs", job_id, "--address", ray_head)
    assert logs.returncode == 0 and "registered tiny-job version 1" in logs.stdout
    listing = slimline("jobs", "ls", "--address", ray_head)
    assert job_id in listing.stdout and "SUCCEEDED" in listing.stdout
    assert slimline("jobs", "status", job_id, "--address", ray_head).stdout.strip() == "SUCCEEDED"

    again = slimline("submit", str(spec), "--address", ray_head, "--tick-id", "t1")
    assert again.returncode == 0 and again.stdout.startswith(f"already submitted: {job_id}")
    assert (
        len(MlflowClient(tracking_uri=store, registry_uri=store).search_model_versions("name='tiny-job'"))
        == 1
    )
    assert len([j for j in listing.stdout.splitlines() if job_id in j]) == 1


def test_unreachable_dashboard_is_exit_two(tiny_model, tiny_spec, slimline, tmp_path, unused_port) -> None:
    spec, _ = _spec_file(tmp_path, tiny_model, tiny_spec)
    address = f"http://127.0.0.1:{unused_port}"
    res = slimline("submit", str(spec), "--address", address)
    assert res.returncode == 2
    line = res.stderr.strip()
    assert "\n" not in line and address in line and "unreachable" in line
    assert slimline("jobs", "ls", "--address", address).returncode == 2


def test_two_node_cluster_runs_stages_on_both_nodes(tiny_model, tiny_spec, tmp_path) -> None:
    from ray.cluster_utils import Cluster

    from slimline.cluster.ray_executor import RayExecutor
    from slimline.pipelines.run.run import run
    from slimline.pipelines.spec.spec import Spec

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        variants = {
            "pruning": ["none", {"method": "heads", "amount": 0.5}, {"method": "ffn", "amount": 0.5}],
            "quantization": ["none", {"method": "dynamic-int8"}],
        }
        spec = Spec.model_validate(
            tiny_spec(tiny_model("bert"), "feature-extraction", tmp_path / "a", variants=variants)
        )
        with RayExecutor(address=cluster.address) as ex:
            assert ex.describe().nodes == 2 and ex.describe().workers == 2
            start = time.monotonic()
            manifest = run(spec, ex)
        assert manifest["status"] == "succeeded", manifest["variants"]
        assert len(manifest["stages_per_node"]) == 2  # both nodes ran stages
        assert all(n > 0 for n in manifest["stages_per_node"].values())
        assert time.monotonic() - start < 600
    finally:
        cluster.shutdown()


def test_scheduled_tick_is_submitted_once(
    ray_head, tiny_model, tiny_spec, slimline, tmp_path, shared_artifacts
) -> None:
    spec, store = _spec_file(tmp_path, tiny_model, tiny_spec, shared_artifacts)
    before = _manifests(shared_artifacts)
    data = yaml.safe_load(spec.read_text())
    data["schedule"] = {"cron": "* * * * *"}  # every minute: the latest fire time is always due
    spec.write_text(yaml.safe_dump(data))
    first = slimline("schedule", str(spec), "--once", "--address", ray_head, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "exit 0" in first.stderr and "registered tiny-job version 1" in first.stdout
    (manifest_path,) = _manifests(shared_artifacts) - before
    tick = json.loads(manifest_path.read_text())["tick_id"]
    assert tick and manifest_path.parent.name == f"tiny-{tick}"
    # Within the same minute the tick is done; in the next one a new tick may run, never a new version.
    slimline("schedule", str(spec), "--once", "--address", ray_head, timeout=900)
    assert (
        len(MlflowClient(tracking_uri=store, registry_uri=store).search_model_versions("name='tiny-job'"))
        == 1
    )


def _until_ended(ray_head: str, job_id: str, slimline, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = slimline("jobs", "status", job_id, "--address", ray_head).stdout.strip()
        if status not in ("PENDING", "RUNNING") or time.monotonic() > deadline:
            return status
        time.sleep(1)


def test_a_stopped_tick_is_retried_once_then_a_no_op(
    ray_head, tiny_model, tiny_spec, slimline, tmp_path, shared_artifacts
) -> None:
    spec, _ = _spec_file(tmp_path, tiny_model, tiny_spec, shared_artifacts)
    first = slimline("submit", str(spec), "--address", ray_head, "--tick-id", "t2")
    job_id = first.stdout.splitlines()[0].split(": ", 1)[1]
    assert first.returncode == 0 and first.stdout.startswith("submitted: ")
    assert slimline("jobs", "stop", job_id, "--address", ray_head).returncode == 0
    assert _until_ended(ray_head, job_id, slimline) == "STOPPED"

    retry = slimline("submit", str(spec), "--address", ray_head, "--tick-id", "t2", "--wait", timeout=900)
    assert retry.returncode == 0, retry.stdout[-3000:] + retry.stderr[-3000:]
    assert retry.stdout.startswith(f"submitted: {job_id}-r2\n")
    assert f"retrying: previous attempt STOPPED ({job_id})" in retry.stderr
    assert retry.stdout.rstrip().endswith(f"{job_id}-r2: SUCCEEDED")
    manifest = json.loads((shared_artifacts / "tiny-t2" / "manifest.json").read_text())
    assert manifest["submission_id"] == f"{job_id}-r2"

    again = slimline("submit", str(spec), "--address", ray_head, "--tick-id", "t2")
    assert again.returncode == 0 and again.stdout.startswith(f"already submitted: {job_id}-r2")
    assert "retrying" not in again.stderr


def test_a_cluster_without_slimline_is_named_with_the_fix(ray_head, slimline) -> None:
    import io

    from slimline.cluster.submit import Jobs

    # A head started outside the venv: the job's shell finds no `slimline` on its PATH.
    jobs = Jobs(ray_head)
    sub = jobs.submit("slimline-no-cli", "slimline --version", {"env_vars": {"PATH": "/usr/bin:/bin"}}, {})
    out, err = io.StringIO(), io.StringIO()
    assert jobs.follow(sub.id, out, err) == "FAILED"
    assert "slimline: not found" in out.getvalue() or "command not found" in out.getvalue()
    hint = err.getvalue().strip()
    assert "\n" not in hint and "--with-project" in hint and "cluster image" in hint

    status = slimline("jobs", "status", sub.id, "--address", ray_head)
    assert status.returncode == 0 and status.stdout.strip() == "FAILED" and status.stderr.strip() == hint
