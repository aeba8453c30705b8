"""Every cluster config parses, has the fields its engine needs, and runs a command the CLI accepts."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import yaml

from slimline.cli.main import main
from slimline.cluster.kuberay import cronjob, dump_all, ray_cluster_spec, rayjob
from slimline.pipelines.schedule.emit import crontab, on_calendar, systemd

ROOT = Path(__file__).resolve().parents[3]


def _cli_accepts(command: str) -> None:
    """Parse a `slimline ...` command line with the real CLI (raises on an unknown option)."""
    args = shlex.split(command)
    assert Path(args[0]).name == "slimline"
    ctx = main.make_context("slimline", args[1:], resilient_parsing=False)
    name = ctx.protected_args[0] if ctx.protected_args else ctx.args[0]
    sub = main.get_command(ctx, name)
    assert sub is not None, name
    rest = (ctx.protected_args + ctx.args)[1:]
    with click.Context(main) as parent:
        sub.make_context(name, rest, parent=parent)


def test_launcher_has_a_cpu_head_and_a_gpu_worker_group() -> None:
    cfg = yaml.safe_load((ROOT / "cluster/launcher.yaml").read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "docker"):
        assert key in cfg
    nodes = cfg["available_node_types"]
    assert nodes[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu = [n for n in nodes.values() if n["resources"].get("GPU", 0) >= 1]
    assert gpu and gpu[0]["max_workers"] >= 1
    assert any("--dashboard-host" in c for c in cfg["head_start_ray_commands"])


def test_kuberay_files_are_what_the_code_builds() -> None:
    rc = yaml.safe_load((ROOT / "cluster/kuberay/raycluster.yaml").read_text())
    assert rc["kind"] == "RayCluster" and rc["spec"] == ray_cluster_spec()
    rj = yaml.safe_load((ROOT / "cluster/kuberay/rayjob.yaml").read_text())
    assert rj == rayjob("slimline-minilm", "pipelines/examples/minilm-cpu.yaml")


def test_rayjob_fields_gpu_limits_and_entrypoint() -> None:
    rj = yaml.safe_load((ROOT / "cluster/kuberay/rayjob.yaml").read_text())
    spec = rj["spec"]
    assert rj["apiVersion"] == "ray.io/v1" and rj["kind"] == "RayJob"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
    (group,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    _cli_accepts(spec["entrypoint"])
    assert (ROOT / spec["entrypoint"].split()[-1]).is_file()  # the example spec it runs exists


def test_dockerfile_builds_a_cuda_image_with_slimline() -> None:
    text = (ROOT / "cluster/Dockerfile").read_text()
    assert text.startswith("#") and "\nFROM " in text
    assert "download.pytorch.org/whl/cu" in text  # CUDA torch, not the CPU build
    assert 'pip install --no-cache-dir ".[demo]"' in text  # slimline; onnxruntime-gpu comes with it
    for pkg in ("slimline", "pipelines", "tasks", "cluster", "registry"):  # every folder the wheel maps
        assert f"COPY --chown=ray:users {pkg} ./{pkg}" in text


def test_emitted_scheduler_configs(tmp_path) -> None:
    spec = tmp_path / "spec.yaml"
    line = crontab("0 3 * * *", spec, tmp_path, "/venv/bin/slimline").splitlines()
    assert line[0] == "CRON_TZ=UTC"
    fields = line[1].split(" ", 5)
    assert fields[:5] == ["0", "3", "*", "*", "*"]
    _cli_accepts(fields[5].split("&& ", 1)[1].split(" >>")[0])
    files = systemd("slimline-x", "*/15 9-17 * * 1-5", spec, tmp_path, "/venv/bin/slimline")
    assert "OnCalendar=Mon..Fri *-*-* 09..17:00/15:00 UTC" in files["slimline-x.timer"]
    exec_start = next(x for x in files["slimline-x.service"].splitlines() if x.startswith("ExecStart="))
    _cli_accepts(exec_start.split("=", 1)[1])
    assert on_calendar("30 2 1 * *") == ["*-*-01 02:30:00 UTC"]

    spec_text = "version: 1\nname: x\nmodel: {source: m}\n"
    docs = cronjob("slimline-x", "0 3 * * *", spec_text, spec_hash="0123456789abcdef")
    cron = next(d for d in docs if d["kind"] == "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and cron["spec"]["schedule"] == "0 3 * * *"
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    job = yaml.safe_load(config["data"]["rayjob.yaml"])
    # Named per tick by the CronJob pod (submit.sh), so a repeated tick cannot create a second one.
    assert job["kind"] == "RayJob" and job["metadata"]["name"] == "@RAYJOB@"
    assert "--tick-id @TICK@" in job["spec"]["entrypoint"]
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    _cli_accepts(
        job["spec"]["entrypoint"].replace("@TICK@", "0123456789ab-20261123T0300Z")
    )  # as submit.sh does
    # The spec rides in the ConfigMap and is mounted where the entrypoint reads it.
    assert config["data"]["spec.yaml"] == spec_text
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mount = next(m for m in head["containers"][0]["volumeMounts"] if m["name"] == "spec")
    assert job["spec"]["entrypoint"].split()[-1] == f"{mount['mountPath']}/spec.yaml"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["/bin/sh", "/config/submit.sh"]
    assert "kubectl create" in config["data"]["submit.sh"]
    role = next(d for d in docs if d["kind"] == "Role")
    assert role["rules"][0]["resources"] == ["rayjobs"] and "create" in role["rules"][0]["verbs"]
    # The whole emission is valid multi-document YAML.
    assert list(yaml.safe_load_all(dump_all(docs))) == docs
