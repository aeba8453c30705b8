"""`slimline serve REF`: put a registered model (or a run's variant) behind HTTP on Ray Serve.

REF is NAME@alias, NAME/version, NAME (its latest version), or the variant id of a run under
the artifacts folder. With --follow the command polls the alias and rolls the deployment over
to each new version; --emit k8s prints a KubeRay RayService instead of starting anything.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import click

from slimline.cli.common import fail, guarded, spec_or_exit
from slimline.pipelines.errors import FatalInputError
from slimline.pipelines.spec.serve import ServeConfig

# Flags that override the spec's `serve:` block (None: not given).
_FLAGS = (
    "host",
    "port",
    "min_replicas",
    "max_replicas",
    "target_ongoing_requests",
    "max_batch_size",
    "batch_wait_ms",
    "threads",
    "poll_s",
    "max_body_bytes",
    "max_texts",
    "max_text_chars",
    "cpus_per_replica",
    "ingress",
)
# A ServeConfig field set by a flag of another name: errors name the flag.
_FLAG_OF = {"gpus_per_replica": "gpus"}
# A URL path Serve can route: "/" then unreserved, sub-delim, ":", "@", "%" or "/" (RFC 3986);
# no spaces, no "{" or "}" (Serve reads them as wildcards).
_ROUTE = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


def serve_config(spec_serve: ServeConfig | None, flags: dict[str, Any]) -> ServeConfig:
    """The spec's `serve:` block (or the defaults) with every given flag on top; bad values are
    FatalInputError naming the flag."""
    from pydantic import ValidationError

    data = spec_serve.model_dump() if spec_serve else {}
    data.update({k: v for k, v in flags.items() if v is not None})
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where, msg = ".".join(str(p) for p in err["loc"]), err["msg"].removeprefix("Value error, ")
        if not where:  # a check across fields names its field first: "max_replicas: ..."
            where, _, msg = msg.partition(": ")
        raise FatalInputError(f"--{_FLAG_OF.get(where, where).replace('_', '-')}: {msg}") from None


def route_prefix(value: str) -> str:
    """`--route-prefix` as Serve takes it ("/v1/" is "/v1"); FatalInputError when it is no URL
    path Serve can route, checked before Ray starts."""
    prefix = (value.rstrip("/") or "/") if value.startswith("/") else value
    if not _ROUTE.fullmatch(prefix):
        raise FatalInputError(
            f"--route-prefix {value!r}: expected a URL path such as /v1 (starting with '/', no spaces)"
        )
    return prefix


def _variant_source(variant: str, artifacts: Path) -> Any | None:
    """A run's variant by id (newest run first), or None when no manifest under `artifacts` has it."""
    from slimline.cluster.serve import ServeSource

    manifests = sorted(artifacts.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in manifests:
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for row in manifest.get("variants", []):
            if row.get("id") == variant and row.get("onnx"):
                lineage = {"variant_id": variant, "run_id": manifest.get("run_id", "")}
                lineage["spec_hash"] = str(manifest.get("spec_hash", ""))
                return ServeSource(str(Path(row["onnx"]).parent), variant=variant, lineage=lineage)
    return None


def resolve(ref: str, uri: str, artifacts: Path) -> Any:
    """The ServeSource REF names: a run's variant under `artifacts`, else a registry version
    (pulled once into the local cache); FatalInputError when nothing matches."""
    from slimline.adapters import cache_root, registry_source

    if "@" not in ref and "/" not in ref:
        local = _variant_source(ref, artifacts)
        if local is not None:
            return local
    return registry_source(uri, ref, cache_root())


def _port_free(host: str, port: int) -> None:
    """FatalInputError unless this machine can listen on host:port (a bad --host or a taken --port)."""
    not_here = FatalInputError(f"--host {host!r}: not an address or a host name of this machine")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except (OSError, UnicodeError):
        raise not_here from None
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise not_here from None
            raise FatalInputError(
                f"--port {port}: cannot listen on {host} ({exc.strerror}); choose another"
            ) from None


def _stop_on_sigterm() -> None:
    """A service manager's SIGTERM stops the server like Ctrl-C: applications deleted, Ray down."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@click.command()
@click.argument("ref")
@click.option(
    "--spec", "spec_path", type=click.Path(), help="Read `serve:`, the tracking URI and artifacts from it."
)
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow store [default: spec, $MLFLOW_TRACKING_URI, sqlite:///slimline.db].",
)
@click.option(
    "--artifacts",
    type=click.Path(),
    default=None,
    help="Where runs live, for a variant id REF [default: spec's, ./artifacts].",
)
@click.option(
    "--address", default=None, help="A Ray cluster to deploy on [default: an embedded Ray on 127.0.0.1]."
)
@click.option("--host", default=None, help="Interface the HTTP API listens on [default: 127.0.0.1].")
@click.option("--port", type=int, default=None, help="HTTP port [default: 8000].")
@click.option("--route-prefix", default="/", show_default=True, help="URL prefix of the application.")
@click.option("--app-name", default=None, help="Serve application name [default: the model name].")
@click.option("--min-replicas", type=int, default=None)
@click.option("--max-replicas", type=int, default=None, help="Above --min-replicas: autoscale between them.")
@click.option("--target-ongoing-requests", type=float, default=None, help="Autoscaling target per replica.")
@click.option(
    "--max-batch-size", type=int, default=None, help="Requests per batch, and texts per ORT call [16]."
)
@click.option(
    "--batch-wait-ms",
    type=float,
    default=None,
    help="Hold each batch this long for more requests [0: a batch is what queued while the model ran].",
)
@click.option("--cpus-per-replica", type=float, default=None, help="CPUs each replica reserves [1].")
@click.option(
    "--threads", type=int, default=None, help="ONNX Runtime threads per replica [its --cpus-per-replica]."
)
@click.option(
    "--ingress",
    type=click.Choice(["proxy", "haproxy"]),
    default=None,
    help="Serve's HTTP proxy, or Ray's HAProxy ingress (faster; stats ports on all interfaces) [proxy].",
)
@click.option("--max-body-bytes", type=int, default=None, help="Larger request bodies get 413 [1 MiB].")
@click.option("--max-texts", type=int, default=None, help="More texts in a request get 422 [256].")
@click.option("--max-text-chars", type=int, default=None, help="A longer text gets 422 [20000].")
@click.option("--follow", is_flag=True, help="Watch REF's alias and roll over to each new version.")
@click.option("--poll-s", type=float, default=None, help="How often --follow reads the alias [10].")
@click.option(
    "--emit", type=click.Choice(["k8s"]), default=None, help="Print a KubeRay RayService; start nothing."
)
@click.option("--image", default=None, help="Container image for --emit k8s.")
@click.option("--gpus", type=float, default=None, help="GPUs per replica (CUDA provider).")
@click.option("--verbose", is_flag=True, help="Show Ray's and Serve's own logs.")
@click.pass_context
def serve(ctx: click.Context, ref: str, spec_path: str | None, **opts: Any) -> None:
    """Serve REF (NAME@alias, NAME/version, NAME, or a run's variant id) over HTTP on Ray Serve.

    POST /embed, /classify or /score (by task) with {"texts": [...]}; POST /generate for a causal LM
    with a decoding graph; GET /healthz and /model.
    """
    spec = spec_or_exit(ctx, spec_path) if spec_path else None
    flags = {k: opts[k] for k in _FLAGS}
    if opts["gpus"] is not None:
        flags["gpus_per_replica"] = opts["gpus"]
    cfg = guarded(ctx, lambda: serve_config(spec.serve if spec else None, flags))
    opts["route_prefix"] = guarded(ctx, lambda: route_prefix(opts["route_prefix"]))
    if opts["emit"]:
        _emit(ctx, ref, cfg, opts["image"])
        return
    from slimline.pipelines.uris import resolve_uri
    from slimline.registry.browse import Ref

    uri = resolve_uri(opts["tracking_uri"], spec.registry.tracking_uri if spec else None)
    artifacts = Path(opts["artifacts"] or (spec.artifacts.path if spec else "artifacts"))
    if opts["follow"] and not guarded(ctx, lambda: Ref.parse(ref)).alias:
        fail(ctx, FatalInputError(f"--follow: {ref!r} names no alias; expected NAME@alias"))
    if not (opts["address"] or os.environ.get("RAY_ADDRESS")):  # a cluster's port is on its head node
        guarded(ctx, lambda: _port_free(cfg.host, cfg.port))
    source = guarded(ctx, lambda: resolve(ref, uri, artifacts))
    app = opts["app_name"] or source.name or source.variant or "slimline"
    _run(ctx, source, cfg, app=app, ref=ref, uri=uri, opts=opts)


def _say(text: str) -> None:
    click.echo(text)
    sys.stdout.flush()  # a supervisor (or a test) reads these lines as they come


def _run(
    ctx: click.Context, source: Any, cfg: ServeConfig, *, app: str, ref: str, uri: str, opts: dict[str, Any]
) -> None:
    from slimline.cluster.serve import serve_instance, undeploy
    from slimline.tasks.serving import ENDPOINTS

    prefix = opts["route_prefix"].rstrip("/")
    base = f"http://{cfg.host}:{cfg.port}{prefix}"
    try:
        with serve_instance(cfg, opts["address"], verbose=opts["verbose"]):
            _stop_on_sigterm()  # after ray.init, which installs its own (aborting) SIGTERM handler
            _deploy(source, cfg, app=app, route_prefix=opts["route_prefix"])
            what = f"{source.name} version {source.version}" if source.name else f"variant {source.variant}"
            endpoint = "/" + ENDPOINTS.get(_task_of(source), "embed")
            _say(f"serving {what} at {base}{endpoint}  (GET {base}/model, {base}/healthz; Ctrl-C stops)")
            failed: set[str] = set()
            try:
                while True:
                    time.sleep(cfg.poll_s if opts["follow"] else 3600)
                    if opts["follow"]:
                        source = _follow_step(
                            source, cfg, app=app, ref=ref, uri=uri, opts=opts, failed=failed
                        )
            finally:
                undeploy(app)
    except KeyboardInterrupt:
        _say("stopped: application deleted, ports released")
    except FatalInputError as exc:
        fail(ctx, exc)


class DeployFailed(FatalInputError):
    """Serve could not start the application (a replica failed to load the model): exit 1."""

    exit_code = 1


def _deploy(source: Any, cfg: ServeConfig, *, app: str, route_prefix: str) -> None:
    from slimline.cluster.serve import deploy

    try:
        deploy(source, cfg, app_name=app, route_prefix=route_prefix)
    except (KeyboardInterrupt, FatalInputError):
        raise
    except Exception as exc:  # Serve's own error holds the replica's traceback: keep its last line
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise DeployFailed(
            f"{app}: the deployment failed: {lines[-1] if lines else type(exc).__name__}"
        ) from exc


def _task_of(source: Any) -> str:
    from slimline.tasks.graph import ONNX_NAME, read_meta

    try:
        return str(read_meta(Path(source.folder) / ONNX_NAME)["task"])
    except (OSError, ValueError, KeyError, TypeError):
        return "feature-extraction"


def _follow_step(
    source: Any, cfg: ServeConfig, *, app: str, ref: str, uri: str, opts: dict[str, Any], failed: set[str]
) -> Any:
    """Read the alias once; on a move, pull the new version and roll the deployment over to it
    (a version that failed to deploy, in `failed`, is not tried again)."""
    import logging

    try:
        new = resolve(ref, uri, Path("."))
    except Exception as exc:  # a registry hiccup must not take the server down: try again next poll
        logging.getLogger(__name__).warning("--follow: cannot read %s: %s", ref, exc)
        return source
    if new.version in (source.version, *failed):
        return source
    _say(f"{ref} moved: version {source.version} -> {new.version}; rolling update")
    try:
        _deploy(new, cfg, app=app, route_prefix=opts["route_prefix"])
    except DeployFailed as exc:  # Serve keeps the old replicas when the new ones fail to start
        failed.add(str(new.version))
        _say(f"{exc}; still serving version {source.version}")
        return source
    _say(f"serving {new.name} version {new.version}")
    return new


def _emit(ctx: click.Context, ref: str, cfg: ServeConfig, image: str | None) -> None:
    from slimline.cluster.kuberay_serve import rayservice
    from slimline.registry.browse import Ref

    parsed = guarded(ctx, lambda: Ref.parse(ref))
    manifest = rayservice(ref, parsed.name, cfg, **({"image": image} if image else {}))
    click.echo(manifest, nl=False)
