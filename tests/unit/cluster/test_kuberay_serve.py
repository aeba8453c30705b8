"""`slimline serve --emit k8s`: the RayService manifest and the serving settings behind it."""

from __future__ import annotations

import pytest
import yaml

from slimline.cli.serve import serve_config
from slimline.cluster.kuberay_serve import IMPORT_PATH, rayservice
from slimline.pipelines.errors import FatalInputError
from slimline.pipelines.spec.serve import ServeConfig


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_rayservice_runs_the_builder_with_the_ref_and_reads_the_uri_from_a_secret() -> None:
    cfg = ServeConfig(min_replicas=1, max_replicas=3, gpus_per_replica=1)
    text = rayservice("minilm@champion", "minilm", cfg, image="registry.example/slimline:1")
    (doc,) = _docs(text)
    assert doc["kind"] == "RayService" and doc["apiVersion"] == "ray.io/v1"
    serve_cfg = yaml.safe_load(doc["spec"]["serveConfigV2"])
    (app,) = serve_cfg["applications"]
    assert app["import_path"] == IMPORT_PATH and app["args"]["ref"] == "minilm@champion"
    assert ServeConfig.model_validate(app["args"]["serve"]).max_replicas == 3  # the builder can read it
    (dep,) = app["deployments"]
    assert dep["autoscaling_config"]["max_replicas"] == 3 and dep["ray_actor_options"]["num_gpus"] == 1
    workers = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert all(
        c["resources"]["limits"]["nvidia.com/gpu"]
        for w in workers
        for c in w["template"]["spec"]["containers"]
    )
    groups = [doc["spec"]["rayClusterSpec"]["headGroupSpec"], *workers]
    for c in (c for g in groups for c in g["template"]["spec"]["containers"]):
        (env,) = c["env"]
        assert env["valueFrom"]["secretKeyRef"] == {"name": "minilm-tracking", "key": "uri"}
        assert c["image"] == "registry.example/slimline:1"
    assert "kubectl create secret generic minilm-tracking" in text and "&id" not in text


def test_cpu_replicas_ask_for_no_gpu() -> None:
    (doc,) = _docs(rayservice("m/2", "m", ServeConfig()))
    for w in doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        assert "tolerations" not in w["template"]["spec"]
        for c in w["template"]["spec"]["containers"]:
            assert "nvidia.com/gpu" not in c["resources"]["limits"]
    app = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"][0]
    assert app["deployments"][0]["num_replicas"] == 1 and "autoscaling_config" not in app["deployments"][0]


def test_flags_override_the_spec_block_and_bad_values_name_the_flag() -> None:
    cfg = serve_config(ServeConfig(min_replicas=2, max_replicas=4, port=9000), {"port": 8100, "host": None})
    assert (cfg.min_replicas, cfg.max_replicas, cfg.port) == (2, 4, 8100)
    assert cfg.autoscaling() == {"min_replicas": 2, "max_replicas": 4, "target_ongoing_requests": 4.0}
    with pytest.raises(FatalInputError, match=r"--max-replicas: expected at least min_replicas \(3\)"):
        serve_config(None, {"min_replicas": 3, "max_replicas": 2})
    with pytest.raises(FatalInputError, match="--max-batch-size"):
        serve_config(None, {"max_batch_size": 0})


def test_the_haproxy_ingress_reaches_every_pod_and_threads_follow_the_reserved_cpus() -> None:
    cfg = serve_config(None, {"ingress": "haproxy", "cpus_per_replica": 2.0})
    (doc,) = _docs(rayservice("minilm@champion", "minilm", cfg))
    cluster = doc["spec"]["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        for c in group["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert ServeConfig().ingress_env() == {}  # Serve's own proxy needs nothing
    assert cfg.ort_threads(cpus_here=16) == 2 and ServeConfig().ort_threads(cpus_here=16) == 1
    assert ServeConfig(threads=3).ort_threads(cpus_here=2) == 3  # what the user asked for
    assert ServeConfig(cpus_per_replica=8).ort_threads(cpus_here=2) == 2  # never more than the node has
    with pytest.raises(FatalInputError, match="ingress"):
        serve_config(None, {"ingress": "nginx"})
