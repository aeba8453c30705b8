"""Serving a registered graph on Ray Serve: one deployment per application, batched, over HTTP.

The replica holds a `tasks.serving.Predictor` (one ONNX Runtime session, CUDA provider when it
has a GPU, as many threads as CPUs it reserves) behind FastAPI. Requests are batched adaptively
(`cluster.batching`: a batch is what queued while the model ran, a lone request runs at once, and
texts are padded per length bucket); the ONNX Runtime call runs in a thread, so the replica keeps
accepting requests (and health checks) meanwhile.

Redeploying an application under the same name with another model version is Serve's rolling
update: old replicas finish their in-flight requests and stop, new ones start (a fifth of the
replicas at a time, at least one), and requests that arrive while no replica is ready wait in
Serve's router rather than fail. `--follow` uses exactly that.
"""

# No `from __future__ import annotations`: FastAPI reads `request: Request` from the real
# annotation (as a string, Serve's ingress wrapper makes it a query parameter).
import contextlib
import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve

from slimline.cluster.batching import Batcher
from slimline.cluster.serve_generate import Generation, GenerationLoop, generate_response
from slimline.cluster.serve_generate import request_body as generate_body
from slimline.cluster.serve_requests import (
    ERRORS,
    Embeddings,
    Labels,
    Scores,
    one_line,
    parse_texts,
    read_body,
    refuse_media,
    request_body,
)
from slimline.pipelines.spec.serve import ServeConfig
from slimline.tasks.base import TaskError

log = logging.getLogger(__name__)

PULL_PREFIX = "slimline-serve-"  # a replica's registry pull, in the temporary folder
TASK_ENDPOINTS = ("/embed", "/classify", "/score")  # one per task: a replica serves one of them


@dataclass(frozen=True)
class ServeSource:
    """What a replica serves: a graph folder on its node, or a way to fetch one (another node).

    `fetch(dest)` writes the graph folder into `dest` (a registry pull); it must pickle, since
    Serve ships it to every replica.
    """

    folder: str | None
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    variant: str | None = None
    lineage: dict[str, str] = field(default_factory=dict)
    fetch: Callable[[Path], Any] | None = None

    def local_folder(self) -> Path:
        """The graph folder on this node, fetched into a temporary folder when it is not here
        (give that one back with `release`)."""
        if self.folder and (Path(self.folder) / "model.onnx").is_file():
            return Path(self.folder)
        if self.fetch is None:
            raise FileNotFoundError(
                f"{self.folder}: no model.onnx on this node, and no registry to pull from"
            )
        dest = Path(tempfile.mkdtemp(prefix=PULL_PREFIX))
        try:
            self.fetch(dest)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        return dest

    def release(self, folder: Path) -> None:
        """Remove `folder` when `local_folder` pulled it (a replica stopping); the source's own
        folder is left alone."""
        if self.folder and Path(self.folder) == folder:
            return
        if folder.name.startswith(PULL_PREFIX) and folder.parent == Path(tempfile.gettempdir()):
            shutil.rmtree(folder, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        """The /model answer's identity part."""
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "variant": self.variant,
            "lineage": dict(self.lineage),
        }


# What this process's replica serves. Serve pickles the deployment class by value, with copies of
# the globals its methods use; module-level functions go by reference, so `_document` and
# `_Api.openapi` read and write this module's dict in the replica.
_SERVED: dict[str, Any] = {}


def _document(endpoint: str, cfg: ServeConfig, generates: bool = False) -> None:
    _SERVED.update(endpoint=f"/{endpoint}", cfg=cfg, generates=generates)


class _Api(FastAPI):
    """FastAPI whose /openapi.json shows the replica's one POST endpoint under its own limits."""

    def openapi(self) -> dict[str, Any]:
        """The schema FastAPI builds, narrowed to what this replica serves."""
        schema = super().openapi()
        endpoint, cfg = _SERVED.get("endpoint"), _SERVED.get("cfg")
        if endpoint is None or cfg is None:
            return schema
        paths = {}
        for path, ops in schema["paths"].items():
            if path in TASK_ENDPOINTS and path != endpoint:
                continue  # a 404 naming the right endpoint, not part of this API
            if path == "/generate":
                if not _SERVED.get("generates"):
                    continue  # a 404: this model does not generate
                body = generate_body(cfg.max_new_tokens, cfg.max_prompt_chars)
                ops = {**ops, "post": {**ops["post"], "requestBody": body}}
            if path == endpoint:
                ops = {
                    **ops,
                    "post": {**ops["post"], "requestBody": request_body(cfg.max_texts, cfg.max_text_chars)},
                }
            paths[path] = ops
        return {**schema, "paths": paths}


api = _Api(title="slimline")
# Every POST endpoint reads its body by hand (serve_requests): this is what it documents.
_BODY = {"requestBody": request_body(ServeConfig().max_texts, ServeConfig().max_text_chars)}


@api.exception_handler(RequestValidationError)
async def _unprocessable(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A bad parameter is the client's error: 422 with one line (the first error, never all)."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return JSONResponse(
        status_code=422, content={"detail": f"{where}: {first.get('msg', 'invalid request')}"}
    )


def _json(payload: dict[str, Any]) -> Response:
    """A JSON response written by orjson: FastAPI's default encoder walks every float of every
    embedding in Python (3.4 ms for 8 MiniLM embeddings, against 0.07 ms), which on short texts
    costs more than the model."""
    return Response(orjson.dumps(payload), media_type="application/json")


def _bind_internal_grpc() -> None:
    """Bind this replica's inter-deployment gRPC server to its node's address, not every interface.

    Serve (2.60) opens it on "[::]:0" in `ReplicaBase._on_initialized`, which runs after the
    deployment's constructor, in this process. Serve's routers dial it at the address the replica
    reports, `ray.util.get_node_ip_address()` in this process, so binding that one address keeps
    it reachable: 127.0.0.1 on the embedded Ray (`join_ray` keeps the node on loopback), the
    node's own IP on a cluster.
    """
    import ray

    try:
        from ray.serve._private import replica
    except ImportError:  # another Serve layout: leave its default
        return
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or hasattr(original, "__wrapped__"):
        return
    ip = ray.util.get_node_ip_address()
    host = f"[{ip}]" if ":" in ip else ip

    @functools.wraps(original)
    def bind(server: Any, address: str) -> Any:
        if address.startswith("[::]:"):
            address = f"{host}:{address.removeprefix('[::]:')}"
        return original(server, address)

    replica.add_port_to_grpc_server = bind


@serve.deployment(name="model", health_check_period_s=5)
@serve.ingress(api)
class ModelServer:
    """One replica: a Predictor and the HTTP API that fits its task."""

    def __init__(self, source: ServeSource, config: dict[str, Any]) -> None:
        from slimline.tasks.serving import Predictor

        _bind_internal_grpc()
        self.source = source
        self.cfg = ServeConfig.model_validate(config)
        device = "cuda" if self.cfg.gpus_per_replica > 0 else "cpu"
        threads = self.cfg.ort_threads(os.cpu_count() or 1)
        self.folder: Path | None = source.local_folder()
        try:
            self.predictor = Predictor(
                self.folder,
                device=device,
                threads=threads,
                max_length=self.cfg.max_length,
                spinning=self.cfg.spinning,
            )
        except BaseException:
            self.__del__()
            raise
        self.generator: GenerationLoop | None = None
        if self.predictor.task == "causal-lm" and self.predictor.meta.get("kv_cache"):
            from slimline.tasks.generation import Generator

            gen = Generator.from_predictor(self.predictor, self.folder)
            self.generator = GenerationLoop(gen, max_batch=self.cfg.max_batch_size)
        _document(self.predictor.endpoint, self.cfg, generates=self.generator is not None)
        batch = self.cfg.max_batch_size
        self.batcher: Batcher[dict[str, Any]] = Batcher(
            lambda texts: self.predictor.predict(texts, batch), batch, self.cfg.batch_wait_ms / 1000
        )

    def __del__(self) -> None:
        """Serve calls this when the replica stops: a registry pull into a temporary folder goes."""
        folder, self.folder = getattr(self, "folder", None), None
        if folder is not None:
            self.source.release(folder)

    async def _run(self, endpoint: str, request: Request) -> list[dict[str, Any]]:
        """The model's answers to a request's texts; every fault of the request is a 4xx with
        one line (serve_requests), a fault of the model a logged 500."""
        if endpoint != self.predictor.endpoint:
            raise HTTPException(
                404, f"this model is {self.predictor.task}: use POST /{self.predictor.endpoint}"
            )
        refuse_media(request.headers)
        body = await read_body(request.headers, request.stream(), self.cfg.max_body_bytes)
        texts = parse_texts(body, max_texts=self.cfg.max_texts, max_text_chars=self.cfg.max_text_chars)
        try:
            return await self.batcher.submit(texts)
        except (TaskError, ValueError) as exc:  # what the model says of the request's data
            raise HTTPException(422, f"body.texts: {one_line(exc)}") from exc
        except Exception as exc:
            log.exception("the model failed on a request of %d texts", len(texts))
            raise HTTPException(
                500, f"the model failed: {type(exc).__name__} (see the replica's log)"
            ) from exc

    @api.post("/embed", response_model=Embeddings, responses=ERRORS, openapi_extra=_BODY)
    async def embed(self, request: Request) -> Response:
        """Embeddings of `{"texts": [...]}`, one per text (feature-extraction models)."""
        got = await self._run("embed", request)
        return _json({"embeddings": [r["embedding"] for r in got], "version": self.source.version})

    @api.post("/classify", response_model=Labels, responses=ERRORS, openapi_extra=_BODY)
    async def classify(self, request: Request) -> Response:
        """Top label, its probability and every class probability (text-classification models)."""
        got = await self._run("classify", request)
        return _json(
            {
                "labels": [r["label"] for r in got],
                "scores": [r["score"] for r in got],
                "probabilities": [r["scores"] for r in got],
                "version": self.source.version,
            }
        )

    @api.post("/score", response_model=Scores, responses=ERRORS, openapi_extra=_BODY)
    async def score(self, request: Request) -> Response:
        """Per-token log-probabilities of each text (causal LMs)."""
        return _json({"results": await self._run("score", request), "version": self.source.version})

    @api.post(
        "/generate",
        response_model=Generation,
        responses={**ERRORS, 200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
        openapi_extra={
            "requestBody": generate_body(ServeConfig().max_new_tokens, ServeConfig().max_prompt_chars)
        },
    )
    async def generate(self, request: Request) -> Response:
        """Text from a prompt or chat messages (causal LMs with a decoding graph); Server-Sent
        Events with `"stream": true`."""
        return await generate_response(
            self.generator,
            request,
            max_body_bytes=self.cfg.max_body_bytes,
            max_new_tokens_limit=self.cfg.max_new_tokens,
            max_prompt_chars=self.cfg.max_prompt_chars,
            version=self.source.version,
        )

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """200 once the replica has its session."""
        return {"status": "ok"}

    @api.get("/model")
    async def model(self) -> dict[str, Any]:
        """Name, version, alias, variant id and lineage of what this replica serves."""
        batcher = self.batcher
        served = {
            "threads": self.predictor.threads,
            "batches": batcher.batches,
            "texts": batcher.texts,
            "generate": self.generator is not None,
        }
        return {**self.source.describe(), **self.predictor.describe(), "pid": os.getpid(), "served": served}


def application(source: ServeSource, cfg: ServeConfig) -> Any:
    """The Serve application for `source` under `cfg`'s replicas, resources and batching."""
    opts: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": cfg.cpus_per_replica, "num_gpus": cfg.gpus_per_replica},
        # Enough requests per replica in flight for a batch to fill.
        "max_ongoing_requests": max(32, 2 * cfg.max_batch_size),
    }
    scaling = cfg.autoscaling()
    if scaling:
        opts["autoscaling_config"] = scaling
    else:
        opts["num_replicas"] = cfg.min_replicas
    return ModelServer.options(**opts).bind(source, cfg.model_dump())


# Serve's shutdown waits on the controller's `graceful_shutdown` call until the controller kills
# itself; Ray counts that call as a failed task with retries left and prints "(raylet) Task
# ServeController.graceful_shutdown failed. There are infinite retries remaining..." on stdout.
# It is no logger's line: Ray's own switch for these notices turns it off, for this driver only.
QUIET_RETRIES = "RAY_enable_output_error_log_if_still_retry"


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ for the block (a Ray started inside inherits them), then restored."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def serve_instance(cfg: ServeConfig, address: str | None = None, verbose: bool = False) -> Iterator[None]:
    """Ray (embedded on loopback, or `address`) with Serve's HTTP proxy on cfg.host:cfg.port.

    On exit an embedded Ray is shut down with Serve, and its ports are free. On a cluster Serve
    stays up for other applications: delete your own with `undeploy`.

    What listens where with the embedded Ray (tests/integration/test_serve_cli.py lists them):
    - Serve's HTTP proxy: cfg.host:cfg.port, 127.0.0.1 unless `--host` says otherwise;
    - Ray's GCS, raylet, object manager, dashboard and runtime-env agents, and every worker's
      gRPC port (the proxy's, the controller's, each replica's): 127.0.0.1, as `join_ray` starts
      the node on loopback; no dashboard;
    - each replica's inter-deployment gRPC server: Serve binds it to every interface,
      `_bind_internal_grpc` to the node's address (127.0.0.1 here);
    - Serve's gRPC ingress is not started (no gRPC servicers are given).
    On a cluster (`address`) Ray's ports are the cluster's: bound as its nodes were started.
    """
    import ray

    from slimline.cluster.ray_executor import join_ray

    env = {} if verbose else {QUIET_RETRIES: "0"}  # read by Ray's core worker, in ray.init
    # Read by Serve's controller and proxies when they start: set here for the embedded Ray; a
    # cluster's nodes need them in their own environment.
    env.update(cfg.ingress_env())
    with _environ(env):
        owns = join_ray(address, verbose=verbose)
    serve_log = logging.getLogger("ray.serve")  # "Started Serve", "Application ... is ready": noise
    level = serve_log.level
    if not verbose:
        serve_log.setLevel(logging.WARNING)
    try:
        serve.start(
            http_options={"host": cfg.host, "port": cfg.port}, logging_config={"log_level": "WARNING"}
        )
        yield
    finally:
        try:
            if owns:
                try:
                    serve.shutdown()
                finally:
                    ray.shutdown()
        finally:
            serve_log.setLevel(level)


def deploy(source: ServeSource, cfg: ServeConfig, *, app_name: str, route_prefix: str = "/") -> None:
    """Deploy (or roll `app_name` over to) `source`; returns once the application is running."""
    serve.run(application(source, cfg), name=app_name, route_prefix=route_prefix)


def undeploy(app_name: str) -> None:
    """Delete one application (its replicas stop; Serve and other applications stay)."""
    serve.delete(app_name)
