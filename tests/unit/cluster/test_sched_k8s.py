"""The Kubernetes emission: DNS-1123 names, one RayJob per tick followed to its end, no credentials."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from slimline.cluster.kuberay import BASE_NAME_MAX, RAYJOB_NAME_MAX, cronjob, dns_name, dump_all, secret_name
from slimline.pipelines.schedule.schedule import tick_of

HASH = "0123456789abcdef"
LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
SPEC = "version: 1\nname: Nightly_MiniLM.v2\nmodel: {source: m}\n"
SPEC_WITH_URI = SPEC + "registry: {tracking_uri: 'https://ci:s3cret@mlflow.example:5000', alias: champion}\n"


def _kinds(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def test_names_are_dns_labels_that_do_not_collide() -> None:
    messy = dns_name("slimline-Nightly_MiniLM.v2", BASE_NAME_MAX)
    clean = dns_name("slimline-nightly-minilm-v2", BASE_NAME_MAX)
    assert LABEL.fullmatch(messy) and LABEL.fullmatch(clean)
    assert clean == "slimline-nightly-minilm-v2" and messy != clean  # changed names carry a hash
    assert messy.startswith("slimline-nightly-minilm-v2-")
    long = dns_name("slimline-" + "A" * 100, BASE_NAME_MAX)
    assert len(long) <= BASE_NAME_MAX and LABEL.fullmatch(long)
    assert dns_name("slimline-" + "A" * 100, BASE_NAME_MAX) != dns_name(
        "slimline-" + "A" * 101, BASE_NAME_MAX
    )
    assert LABEL.fullmatch(dns_name("9-lives")) and LABEL.fullmatch(dns_name("___"))


def test_every_object_name_is_valid_and_references_match() -> None:
    docs = cronjob("slimline-Nightly_MiniLM.v2", "0 3 * * *", SPEC, spec_hash=HASH)
    for doc in docs:
        name = doc["metadata"]["name"]
        assert LABEL.fullmatch(name) and len(name) <= 63, name
    k = _kinds(docs)
    cron = k["CronJob"]["metadata"]["name"]
    assert len(cron) + 1 + 8 <= RAYJOB_NAME_MAX  # its Jobs, and so the RayJobs, are `<cron>-<minutes>`
    pod = k["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == k["ServiceAccount"]["metadata"]["name"]
    assert k["RoleBinding"]["roleRef"]["name"] == k["Role"]["metadata"]["name"]
    assert pod["volumes"][0]["configMap"]["name"] == k["ConfigMap"]["metadata"]["name"]
    env = pod["containers"][0]["env"][0]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"


def test_the_tracking_uri_comes_from_a_secret_never_the_config_map() -> None:
    docs = cronjob("slimline-x", "0 3 * * *", SPEC_WITH_URI, spec_hash=HASH)
    assert "s3cret" not in dump_all(docs) and "mlflow.example" not in dump_all(docs)
    config = _kinds(docs)["ConfigMap"]["data"]
    spec = yaml.safe_load(config["spec.yaml"])
    assert spec["registry"] == {"alias": "champion"} and spec["name"] == "Nightly_MiniLM.v2"
    job = yaml.safe_load(config["rayjob.yaml"])
    cluster = job["spec"]["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        (env,) = group["template"]["spec"]["containers"][0]["env"]
        ref = env["valueFrom"]["secretKeyRef"]
        assert env["name"] == "MLFLOW_TRACKING_URI" and ref == {
            "name": secret_name("slimline-x"),
            "key": "uri",
            "optional": False,
        }
    # Without a URI in the spec, the Secret is optional and the spec text is kept as written.
    plain = cronjob("slimline-x", "0 3 * * *", SPEC, spec_hash=HASH)
    assert _kinds(plain)["ConfigMap"]["data"]["spec.yaml"] == SPEC
    assert "optional: true" in _kinds(plain)["ConfigMap"]["data"]["rayjob.yaml"]


def test_the_pod_outlives_the_rayjob_so_forbid_is_single_flight() -> None:
    k = _kinds(cronjob("slimline-x", "0 3 * * *", SPEC, spec_hash=HASH))
    spec = k["CronJob"]["spec"]
    job = yaml.safe_load(k["ConfigMap"]["data"]["rayjob.yaml"])
    assert spec["concurrencyPolicy"] == "Forbid" and spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] > job["spec"]["activeDeadlineSeconds"]
    script = k["ConfigMap"]["data"]["submit.sh"]
    assert "jobDeploymentStatus" in script and "jobStatus" in script and "SUCCEEDED" in script


FAKE_KUBECTL = """#!/bin/sh
# kubectl, as far as submit.sh uses it: create -f -, get rayjob NAME -o name|jsonpath=...
echo "$*" >> "$FAKE/calls"
case "$1" in
  create) [ -e "$FAKE/created.yaml" ] && { echo 'AlreadyExists' >&2; exit 1; }
          cat > "$FAKE/created.yaml" ;;
  get) case "$5" in name) echo "rayjob.ray.io/$3" ;; *) cat "$FAKE/state" ;; esac ;;
esac
"""


def _submit(tmp_path: Path, job_name: str, state: str, exists: bool = False) -> subprocess.CompletedProcess:
    config = _kinds(cronjob("slimline-x", "0 3 * * *", SPEC, spec_hash=HASH))["ConfigMap"]["data"]
    for name, text in config.items():
        (tmp_path / name).write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    (tmp_path / "state").write_text(state)
    if exists:
        (tmp_path / "created.yaml").write_text("earlier")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE": str(tmp_path),
        "JOB_NAME": job_name,
    }
    return subprocess.run(
        ["/bin/sh", str(tmp_path / "submit.sh")], env=env, capture_output=True, text=True, check=False
    )


def _gnu_date() -> bool:
    res = subprocess.run(["date", "-u", "-d", "@0", "+%Y"], capture_output=True, text=True, check=False)
    return res.stdout.strip() == "1970"


needs_sh = pytest.mark.skipif(
    not Path("/bin/sh").exists() or not _gnu_date(), reason="needs /bin/sh, date -d @N"
)


@needs_sh
def test_submit_creates_one_rayjob_per_tick_and_reports_its_outcome(tmp_path: Path) -> None:
    at = dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.UTC)
    job = f"slimline-x-{int(at.timestamp()) // 60}"  # how the CronJob names the Job of that fire time
    res = _submit(tmp_path, job, "Complete/SUCCEEDED")
    assert res.returncode == 0, res.stderr
    created = yaml.safe_load((tmp_path / "created.yaml").read_text())
    assert created["metadata"]["name"] == job and len(job) <= RAYJOB_NAME_MAX
    # The same tick id (and so run id) as `slimline schedule` gives that fire time.
    assert f"--tick-id {tick_of(HASH, at).id} " in created["spec"]["entrypoint"]
    assert "jsonpath" in (tmp_path / "calls").read_text()


@needs_sh
@pytest.mark.parametrize("state", ["Complete/FAILED", "Complete/STOPPED", "Failed/RUNNING", "Failed/"])
def test_submit_fails_the_pod_when_the_rayjob_fails(tmp_path: Path, state: str) -> None:
    res = _submit(tmp_path, "slimline-x-29400000", state)
    assert res.returncode != 0 and state in res.stdout


@needs_sh
def test_a_repeated_tick_follows_the_rayjob_already_there(tmp_path: Path) -> None:
    res = _submit(tmp_path, "slimline-x-29400000", "Complete/SUCCEEDED", exists=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "created.yaml").read_text() == "earlier"  # not created twice
    assert "get rayjob slimline-x-29400000 -o name" in (tmp_path / "calls").read_text()


@needs_sh
def test_a_job_not_named_by_the_cronjob_is_refused(tmp_path: Path) -> None:
    res = _submit(tmp_path, "manual-run", "Complete/SUCCEEDED")
    assert res.returncode == 2 and "slimline-x-<minutes since 1970>" in res.stderr
    assert not (tmp_path / "created.yaml").exists()
