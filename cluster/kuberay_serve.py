"""`slimline serve --emit k8s`: a KubeRay RayService running the same Serve application.

The Serve controller imports `slimline.adapters:serve_app` with the REF and the serving
settings as `args`; the pods read MLFLOW_TRACKING_URI from the Secret `<name>-tracking` (key
`uri`), so no credential is written into the manifest, and each replica pulls its own copy of
the version from the registry.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from slimline.cluster.kuberay import IMAGE, URI_ENV, dns_name, dump_all, ray_cluster_spec
from slimline.pipelines.spec.serve import ServeConfig

SERVE_PORT = 8000

# The Serve controller imports this builder (the composition root picks the MLflow registry there).
IMPORT_PATH = "slimline.adapters:serve_app"


def _deployment(cfg: ServeConfig) -> dict[str, Any]:
    dep: dict[str, Any] = {
        "name": "model",
        "ray_actor_options": {"num_cpus": cfg.cpus_per_replica, "num_gpus": cfg.gpus_per_replica},
    }
    scaling = cfg.autoscaling()
    if scaling:
        dep["autoscaling_config"] = scaling
    else:
        dep["num_replicas"] = cfg.min_replicas
    return dep


def _cpu_only(cluster: dict[str, Any]) -> None:
    """Workers without GPUs: no nvidia.com/gpu request and no GPU toleration."""
    for group in cluster["workerGroupSpecs"]:
        group["groupName"] = "cpu"
        pod = group["template"]["spec"]
        pod.pop("tolerations", None)
        for container in pod["containers"]:
            for key in ("limits", "requests"):
                container["resources"][key].pop("nvidia.com/gpu", None)


def rayservice(ref: str, name: str, cfg: ServeConfig, *, image: str = IMAGE) -> str:
    """The RayService YAML (with the `kubectl create secret` line it needs, as a comment)."""
    base = dns_name(name, 47)  # KubeRay names the API service <base>-serve-svc
    secret = f"{base}-tracking"
    # The container always listens on every interface; Kubernetes' Service decides who reaches it.
    settings = cfg.model_dump(exclude={"host", "port", "poll_s"})
    app = {
        "name": dns_name(name),
        "import_path": IMPORT_PATH,
        "route_prefix": "/",
        "args": {"ref": ref, "serve": settings},
        "deployments": [_deployment(cfg)],
    }
    serve_config = {"http_options": {"host": "0.0.0.0", "port": SERVE_PORT}, "applications": [app]}
    cluster = ray_cluster_spec(image, gpu_workers=max(1, cfg.min_replicas))
    if cfg.gpus_per_replica <= 0:
        _cpu_only(cluster)
    env = [{"name": URI_ENV, "valueFrom": {"secretKeyRef": {"name": secret, "key": "uri"}}}]
    env += [{"name": k, "value": v} for k, v in cfg.ingress_env().items()]  # read when Serve starts
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        for container in group["template"]["spec"]["containers"]:
            container["env"] = copy.deepcopy(env)  # shared objects become YAML anchors
            container["ports"] = [{"containerPort": SERVE_PORT, "name": "serve"}]
    doc = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": base, "labels": {"app.kubernetes.io/part-of": "slimline"}},
        "spec": {"serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False), "rayClusterSpec": cluster},
    }
    note = (
        f"# Serves {ref}. First: kubectl create secret generic {secret} --from-literal=uri='<tracking URI>'\n"
        f"# Then kubectl apply -f this.yaml: the API is on the service {base}-serve-svc, port {SERVE_PORT}.\n"
    )
    return note + dump_all([doc])
