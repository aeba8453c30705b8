"""KubeRay objects built in code: the RayJob a tick submits, and the CronJob that submits it.

KubeRay's RayCronJob is alpha and has no concurrency policy; a Kubernetes CronJob with
`concurrencyPolicy: Forbid` whose pod creates a RayJob is the dependable form.
"""

from __future__ import annotations

from typing import Any

import yaml

IMAGE = "ghcr.io/slimline/slimline:latest"  # built from cluster/Dockerfile
SPEC_MOUNT = "/slimline-spec"


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


def rayjob(name: str, spec_file: str, *, image: str = IMAGE, deadline_s: int = 6 * 3600) -> dict[str, Any]:
    """A RayJob that brings up its own cluster, runs `slimline run` on the spec, and tears down."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "slimline"}},
        "spec": {
            "entrypoint": f"slimline run {spec_file}",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 3600,
            "activeDeadlineSeconds": deadline_s,
            "rayClusterSpec": ray_cluster_spec(image),
        },
    }


def cronjob(name: str, cron: str, spec_text: str, *, image: str = IMAGE) -> list[dict[str, Any]]:
    """The objects of a scheduled sweep: RBAC, the spec and RayJob template, and the CronJob.

    Each tick creates a RayJob from the template (`generateName`, so unique per tick); Forbid keeps
    a tick from starting while the previous one's pod still runs. The spec travels in the
    ConfigMap and is mounted into the Ray head, where the job's entrypoint runs.
    """
    template = rayjob(f"{name}-tick", f"{SPEC_MOUNT}/spec.yaml", image=image)
    del template["metadata"]["name"]
    template["metadata"]["generateName"] = f"{name}-"
    head = template["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["volumeMounts"].append({"name": "spec", "mountPath": SPEC_MOUNT})
    head["volumes"].append(
        {
            "name": "spec",
            "configMap": {"name": f"{name}-rayjob", "items": [{"key": "spec.yaml", "path": "spec.yaml"}]},
        }
    )
    role = f"{name}-rayjob-creator"
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
            "metadata": {"name": f"{name}-rayjob"},
            "data": {"rayjob.yaml": yaml.safe_dump(template, sort_keys=False), "spec.yaml": spec_text},
        },
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": name},
            "spec": {
                "schedule": cron,
                "timeZone": "Etc/UTC",
                "concurrencyPolicy": "Forbid",
                "startingDeadlineSeconds": 600,
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 3,
                "jobTemplate": {
                    "spec": {
                        "backoffLimit": 0,
                        "template": {
                            "spec": {
                                "serviceAccountName": role,
                                "restartPolicy": "Never",
                                "containers": [
                                    {
                                        "name": "submit",
                                        "image": "bitnami/kubectl:latest",
                                        "command": ["kubectl", "create", "-f", "/config/rayjob.yaml"],
                                        "volumeMounts": [{"name": "config", "mountPath": "/config"}],
                                    }
                                ],
                                "volumes": [{"name": "config", "configMap": {"name": f"{name}-rayjob"}}],
                            }
                        },
                    }
                },
            },
        },
    ]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the embedded spec and RayJob) as readable `|` blocks."""


_Dumper.add_representer(
    str,
    lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None),
)


def dump_all(docs: list[dict[str, Any]]) -> str:
    """Several Kubernetes objects as one multi-document YAML."""
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False)
