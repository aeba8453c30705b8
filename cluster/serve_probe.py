"""`evaluate.serving`: the run's pick and its fp32 baseline served side by side, loaded alike.

Both graphs are deployed as two applications of one Serve instance on 127.0.0.1 (a free port),
one replica each with the defaults `slimline serve` uses, so the numbers are what a user's
endpoint delivers on this machine. Rounds alternate the order of the two models; the medians
over rounds are what the run records. The applications are deleted afterwards; an embedded Ray
started here is shut down, a Ray the executor already runs keeps running.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
from pathlib import Path
from typing import Any

from slimline.cluster.load import run_load
from slimline.cluster.serve import ServeSource, deploy, serve_instance, undeploy
from slimline.pipelines.spec.serve import ServeConfig
from slimline.pipelines.spec.spec import ServingLoad
from slimline.tasks.base import Record
from slimline.tasks.graph import ONNX_NAME, read_meta
from slimline.tasks.serving import ENDPOINTS

STATS = ("rps", "texts_per_s", "p50_ms", "p95_ms", "p99_ms")
WARM_REQUESTS = 8  # the first requests pay for lazy initialisation: not measured


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _replica_cpus() -> float:
    """CPUs per replica: one, or half the cluster's when it has fewer than two (both must fit)."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 1.0))
    return min(1.0, total / 2)


class ServeProbe:
    """The ServingProbe port on Ray Serve."""

    def measure(self, graphs: dict[str, Path], load: ServingLoad, texts: list[str]) -> dict[str, Record]:
        """Per key of `graphs`: the median stats over rounds, errors, each round, the URL."""
        cfg = ServeConfig(port=_free_port(), ingress=load.ingress)
        apps = {key: f"slimline-judge-{i}" for i, key in enumerate(graphs)}
        rounds: dict[str, list[dict[str, Any]]] = {key: [] for key in graphs}
        with serve_instance(cfg):
            cfg = cfg.model_copy(update={"cpus_per_replica": _replica_cpus()})
            try:
                urls = {key: _deploy(folder, cfg, apps[key], load, texts) for key, folder in graphs.items()}
                keys = list(graphs)
                for r in range(load.rounds):
                    for key in keys if r % 2 == 0 else keys[::-1]:
                        per, limit = load.texts_per_request, load.time_limit_s
                        rounds[key].append(
                            run_load(urls[key], texts, load.requests, load.clients, per, limit)
                        )
            finally:
                for app in apps.values():
                    with contextlib.suppress(Exception):  # the measurement stands; Serve goes with its Ray
                        undeploy(app)
        out: dict[str, Record] = {}
        for key, got in rounds.items():
            med = {k: statistics.median(g[k] for g in got) for k in STATS}
            errors = sum(g["errors"] for g in got)
            out[key] = {**med, "errors": errors, "rounds": got, "url": urls[key], "ingress": load.ingress}
        return out


def _deploy(folder: Path, cfg: ServeConfig, app: str, load: ServingLoad, texts: list[str]) -> str:
    """Deploy one graph as application `app` and warm it; its task endpoint's URL."""
    endpoint = ENDPOINTS[read_meta(Path(folder) / ONNX_NAME)["task"]]
    deploy(ServeSource(str(folder), variant=app), cfg, app_name=app, route_prefix=f"/{app}")
    url = f"http://127.0.0.1:{cfg.port}/{app}/{endpoint}"
    run_load(url, texts, WARM_REQUESTS, min(load.clients, WARM_REQUESTS), load.texts_per_request)
    return url
