"""KubeRay objects built in code: the RayJob a tick submits, and the CronJob that submits it.

KubeRay's RayCronJob is alpha and has no concurrency policy; a Kubernetes CronJob with
`concurrencyPolicy: Forbid` whose pod creates a RayJob and waits for its outcome is the
dependable form: the pod lives as long as the tick, so Forbid keeps ticks from overlapping.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import yaml

IMAGE = "ghcr.io/slimline/slimline:latest"  # built from cluster/Dockerfile
SPEC_MOUNT = "/slimline-spec"
DEADLINE_S = 6 * 3600
# KubeRay names a RayJob's RayCluster after it plus 6 characters and caps that at 53 (DNS-1035).
RAYJOB_NAME_MAX = 47
# A CronJob names each Job `<cronjob>-<minutes since 1970 of the fire time>`: 8 digits until 2160.
BASE_NAME_MAX = RAYJOB_NAME_MAX - 1 - 8
URI_ENV = "MLFLOW_TRACKING_URI"


def dns_name(text: str, limit: int = 63) -> str:
    """`text` as a DNS-1035 label (lowercase letters, digits, '-'; a letter first), at most `limit` long.

    A name that had to change ends in a hash of the original, so two names that clean up
    alike ("Nightly_MiniLM" and "nightly-minilm") stay apart.
    """
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if clean == text and len(clean) <= limit and clean[:1].isalpha():
        return clean
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:6]
    head = clean if clean[:1].isalpha() else f"s-{clean}"
    return f"{head[: limit - 7].rstrip('-')}-{digest}"


def _container(name: str, image: str, resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "resources": {"limits": dict(resources), "requests": dict(resources)},
        "volumeMounts": [{"name": "artifacts", "mountPath": "/artifacts"}],
    }


def ray_cluster_spec(
    image: str = IMAGE, gpu_workers: int = 1, pvc: str = "slimline-artifacts"
) -> dict[str, Any]:
    """A CPU head and a GPU worker group, both mounting one shared artifact volume."""

    def volumes() -> list[dict[str, Any]]:  # a fresh list each time: shared objects become YAML anchors
        return [{"name": "artifacts", "persistentVolumeClaim": {"claimName": pvc}}]

    return {
        "rayVersion": "2.60.0",
        "headGroupSpec": {
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
            "template": {
                "spec": {
                    "containers": [_container("ray-head", image, {"cpu": "4", "memory": "16Gi"})],
                    "volumes": volumes(),
                }
            },
        },
        "workerGroupSpecs": [
            {
                "groupName": "gpu",
                "replicas": gpu_workers,
                "minReplicas": 0,
                "maxReplicas": max(gpu_workers, 4),
                "rayStartParams": {},
                "template": {
                    "spec": {
                        "containers": [
                            _container(
                                "ray-worker", image, {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
                            )
                        ],
                        "volumes": volumes(),
                        "tolerations": [
                            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                        ],
                    }
                },
            }
        ],
    }


def rayjob(
    name: str, spec_file: str, *, image: str = IMAGE, deadline_s: int = DEADLINE_S, tick_id: str | None = None
) -> dict[str, Any]:
    """A RayJob that brings up its own cluster, runs `slimline run` on the spec, and tears down."""
    tick = f"--tick-id {tick_id} " if tick_id else ""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "slimline"}},
        "spec": {
            "entrypoint": f"slimline run {tick}{spec_file}",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 3600,
            "activeDeadlineSeconds": deadline_s,
            "rayClusterSpec": ray_cluster_spec(image),
        },
    }


# Runs in the CronJob's pod. $JOB_NAME is the Job's name, which the CronJob derives from the fire
# time: the RayJob takes that name (a repeat of the tick cannot create a second one) and the tick
# id is computed from it as `slimline schedule` does. The pod then waits for the RayJob's outcome.
SUBMIT = """#!/bin/sh
set -eu
config="$(dirname "$0")"
job="$JOB_NAME"
minutes="${{job#{base}-}}"
case "$minutes" in
  "" | *[!0-9]*)
    echo "error: Job $job: expected {base}-<minutes since 1970>, the name the CronJob gives" >&2
    exit 2 ;;
esac
tick="{hash}-$(date -u -d "@$((minutes * 60))" +%Y%m%dT%H%MZ)"
# A repeat of this tick finds its RayJob there already, and follows it instead.
sed -e "s/@RAYJOB@/$job/" -e "s/@TICK@/$tick/" "$config/rayjob.yaml" | kubectl create -f - \\
  || kubectl get rayjob "$job" -o name
while :; do
  state="$(kubectl get rayjob "$job" -o jsonpath='{{.status.jobDeploymentStatus}}/{{.status.jobStatus}}')" \\
    || state="?/"
  case "${{state%%/*}}" in Complete | Failed | ValidationFailed) break ;; esac
  sleep 30
done
echo "RayJob $job, tick $tick: $state"
[ "${{state#*/}}" = SUCCEEDED ]
"""


def without_tracking_uri(spec_text: str) -> tuple[str, bool]:
    """The spec without `registry.tracking_uri` (it may hold a password), and whether it had one."""
    data = yaml.safe_load(spec_text)
    registry = data.get("registry") if isinstance(data, dict) else None
    if not isinstance(registry, dict) or not registry.get("tracking_uri"):
        return spec_text, False
    del registry["tracking_uri"]
    note = f"# registry.tracking_uri: removed; the run reads ${URI_ENV}, set from a Secret\n"
    return note + yaml.safe_dump(data, sort_keys=False), True


def cronjob(
    name: str, cron: str, spec_text: str, *, spec_hash: str | None = None, image: str = IMAGE
) -> list[dict[str, Any]]:
    """The objects of a scheduled sweep: RBAC, the spec and RayJob template, and the CronJob.

    Names are made DNS-1035 labels (`secret_name(name)` is the Secret the tracking URI is read
    from). The spec travels in the ConfigMap, without its tracking URI, and is mounted into the
    Ray head, where the job's entrypoint runs; `spec_hash` makes tick ids match `slimline schedule`'s.
    """
    base = dns_name(name, BASE_NAME_MAX)
    config, role = f"{base}-rayjob", f"{base}-rayjob-creator"
    spec_hash = spec_hash or hashlib.sha256(spec_text.encode()).hexdigest()
    if not re.fullmatch(r"[0-9a-f]{12,}", spec_hash):  # it is written into a shell script
        raise ValueError(f"spec_hash: expected hex digits, got {spec_hash!r}")
    spec_text, has_uri = without_tracking_uri(spec_text)
    template = rayjob("@RAYJOB@", f"{SPEC_MOUNT}/spec.yaml", image=image, tick_id="@TICK@")
    template["metadata"]["labels"]["slimline.io/schedule"] = base
    cluster = template["spec"]["rayClusterSpec"]
    uri = {"name": secret_name(name), "key": "uri", "optional": not has_uri}
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        for container in group["template"]["spec"]["containers"]:
            container["env"] = [{"name": URI_ENV, "valueFrom": {"secretKeyRef": dict(uri)}}]
    head = cluster["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["volumeMounts"].append({"name": "spec", "mountPath": SPEC_MOUNT})
    head["volumes"].append(
        {"name": "spec", "configMap": {"name": config, "items": [{"key": "spec.yaml", "path": "spec.yaml"}]}}
    )
    submit = SUBMIT.format(base=base, hash=spec_hash[:12])
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": role}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": role},
            "rules": [
                {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "list"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role},
            "subjects": [{"kind": "ServiceAccount", "name": role}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": config},
            "data": {
                "rayjob.yaml": yaml.safe_dump(template, sort_keys=False),
                "spec.yaml": spec_text,
                "submit.sh": submit,
            },
        },
        _cron(base, cron, role, config),
    ]


def secret_name(name: str) -> str:
    """The Secret (key `uri`) the scheduled runs read their MLflow tracking URI from."""
    return f"{dns_name(name, BASE_NAME_MAX)}-tracking"


def _cron(base: str, cron: str, role: str, config: str) -> dict[str, Any]:
    job_name = {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}
    pod = {
        "serviceAccountName": role,
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "submit",
                "image": "bitnami/kubectl:latest",
                "command": ["/bin/sh", "/config/submit.sh"],
                "env": [{"name": "JOB_NAME", "valueFrom": job_name}],
                "volumeMounts": [{"name": "config", "mountPath": "/config"}],
            }
        ],
        "volumes": [{"name": "config", "configMap": {"name": config}}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": base},
        "spec": {
            "schedule": cron,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            # The pod outlives the RayJob's own deadline only by the time a cluster takes to start.
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": DEADLINE_S + 3600,
                    "template": {"spec": pod},
                }
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the embedded spec and RayJob) as readable `|` blocks."""


_Dumper.add_representer(
    str,
    lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None),
)


def dump_all(docs: list[dict[str, Any]]) -> str:
    """Several Kubernetes objects as one multi-document YAML."""
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False)
