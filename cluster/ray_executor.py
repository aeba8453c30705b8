"""The Ray executor: every stage is a Ray task, on an embedded Ray or an existing cluster.

Stages take small records in and give small records back; artifacts stay on the shared artifact
root. Deterministic failures come back as records (see pipelines.stages.run_stage), so an
exception reaching this module is either a bug in a stage (recorded, never retried) or a system
failure such as a dead worker or a lost node, which Ray retries up to `max_retries` times.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from slimline.cluster.resources import (
    InfeasibleResources,
    NodeInfo,
    alive_nodes,
    check_feasible,
    slots,
    timing_node,
)
from slimline.cluster.storage import check_shared_root
from slimline.pipelines.errors import FatalInputError
from slimline.pipelines.ports import ExecutorInfo
from slimline.pipelines.run.records import failed
from slimline.tasks.base import Record

log = logging.getLogger(__name__)


def _default_stage_fn() -> Callable[..., Record]:
    from slimline.pipelines.run.stage import run_stage

    return run_stage


# A stage's first use of these modules costs seconds of imports: warm workers pay it up front.
WARM_MODULES = (
    "slimline.pipelines.run.stage",
    "transformers.models.bert.modeling_bert",
    "onnxruntime.quantization",
    "onnxruntime.transformers.optimizer",
)


def _warm() -> int:
    for name in WARM_MODULES:
        importlib.import_module(name)
    return os.getpid()


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Make the Ray that `ray.init` starts listen on 127.0.0.1 only, not on every interface.

    `ray.init(_node_ip_address="127.0.0.1")` is no help: Ray swaps a loopback address for the
    host's. Its own macOS/Windows mode keeps the node on loopback (GCS, raylet, workers, agents);
    it is read from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when Ray is imported, so the flag is set for
    the processes `ray.init` spawns and the imported constant for this one, both only meanwhile:
    a later `ray.init(address=...)` to a real cluster must see the host's address again.
    """
    from ray._private import ray_constants

    var, flag = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "ENABLE_RAY_CLUSTER"
    saved_env, saved_flag = os.environ.get(var), getattr(ray_constants, flag, None)
    os.environ[var] = "0"
    if saved_flag is not None:
        setattr(ray_constants, flag, False)
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = saved_env
        if saved_flag is not None:
            setattr(ray_constants, flag, saved_flag)


def join_ray(address: str | None, *, num_cpus: int | None = None, verbose: bool = False) -> bool:
    """Join the Ray cluster at `address` (or $RAY_ADDRESS), else start an embedded one on
    127.0.0.1; True when this call did either (the caller then shuts it down), False when this
    process had already joined one."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    opts: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": verbose}
    if address:
        try:
            ray.init(address=address, **opts)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise FatalInputError(f"--address: cannot reach a Ray cluster at {address}: {exc}") from exc
        return True
    if not verbose:  # Ray's notice that token auth is on (its default) says nothing about our run
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    with _loopback_only():
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **opts)
    return True


def _on_node(fn: Callable[..., Record], stage: dict[str, Any], inputs: dict[str, Record], ctx: Any) -> Record:
    """Run a stage and say which Ray node ran it (multi-node runs are checked by this)."""
    import ray

    rec = fn(stage, inputs, ctx)
    return {**rec, "ray_node": ray.get_runtime_context().get_node_id()}


class RayExecutor:
    """Runs stages as Ray tasks. Use as a context manager so an embedded Ray is shut down."""

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_task: float = 1,
        gpus_per_task: float = 0,
        max_retries: int = 2,
        stage_fn: Callable[..., Record] | None = None,
        warm: bool = True,
        verbose: bool = False,
    ) -> None:
        import ray

        self._ray = ray
        self._owns = False
        # Inside a Ray job (slimline submit) the job manager says where the cluster is.
        address = address or os.environ.get("RAY_ADDRESS")
        self.address = address or "embedded"
        self._owns = join_ray(address, num_cpus=num_cpus, verbose=verbose)
        self.nodes: list[NodeInfo] = alive_nodes(ray.nodes())
        try:
            check_feasible(self.nodes, cpus_per_task, gpus_per_task, self.address)
        except InfeasibleResources:
            self.close()
            raise
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task
        self.max_retries = max_retries
        self._remote = ray.remote(_on_node)
        self._stage_fn = stage_fn or _default_stage_fn()
        self._timing = timing_node(self.nodes, gpus_per_task)
        self._kinds: dict[Any, str] = {}
        self._cancelled: set[Any] = set()
        self._feasible: set[tuple[float, float]] = set()  # task shapes already checked against the nodes
        self._ctx: tuple[Any, Any] | None = None  # (context object, its object ref)
        if warm:
            self._prestart()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Shut down Ray if this executor started it."""
        if self._owns and self._ray.is_initialized():
            try:
                self._ray.shutdown()
            except Exception as exc:  # shutting down after Ctrl-C must not hide the interrupt
                log.warning("ray.shutdown: %s", exc)
        self._owns = False

    def _prestart(self) -> None:
        """Start and warm one worker per slot, so the first stages do not pay interpreter start-up."""
        warm = self._ray.remote(_warm).options(num_cpus=self.cpus_per_task, num_gpus=0)
        self._ray.get([warm.remote() for _ in range(self.workers)])

    @property
    def workers(self) -> int:
        """How many stages can run at once."""
        return slots(self.nodes, self.cpus_per_task, self.gpus_per_task)

    def _context_ref(self, ctx: Any) -> Any:
        # The context (eval texts, calibration) is the same for every stage: put it in the object store once.
        if self._ctx is None or self._ctx[0] is not ctx:
            self._ctx = (ctx, self._ray.put(ctx))
        return self._ctx[1]

    def submit(
        self, stage: dict[str, Any], inputs: dict[str, Record], ctx: Any, *, exclusive: bool = False
    ) -> Any:
        """Start a stage as a Ray task; `exclusive` takes every CPU of the timing node."""
        # The stage's own resources (the plan's), else the executor's default task shape.
        res = stage.get("resources") or {}
        cpus, gpus = res.get("num_cpus", self.cpus_per_task), res.get("num_gpus", self.gpus_per_task)
        if (cpus, gpus) not in self._feasible:  # a shape no node fits would wait in Ray forever
            check_feasible(self.nodes, cpus, gpus, self.address)
            self._feasible.add((cpus, gpus))
        opts: dict[str, Any] = {
            "num_cpus": cpus,
            "num_gpus": gpus,
            "max_retries": self.max_retries,
            "retry_exceptions": False,  # only system failures are retried
            "name": f"slimline:{stage['kind']}",
        }
        if exclusive:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["num_cpus"] = self._timing.cpus
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self._timing.node_id, soft=False)
        ref = self._remote.options(**opts).remote(self._stage_fn, stage, inputs, self._context_ref(ctx))
        self._kinds[ref] = stage["kind"]
        return ref

    def wait(self, handles: list[Any]) -> tuple[Any, Record]:
        """The first of `handles` to finish, with its record (errors become failed records)."""
        from ray import exceptions as rex

        ready, _ = self._ray.wait(handles, num_returns=1)
        ref = ready[0]
        kind = self._kinds.pop(ref, "stage")
        try:
            return ref, self._ray.get(ref)
        except rex.TaskCancelledError:
            if ref not in self._cancelled:
                # Not cancelled by us: Ctrl-C reached Ray first (or `ray job stop`). Stop the run.
                raise KeyboardInterrupt from None
            return ref, failed(kind, "interrupted")
        except rex.RayTaskError as exc:  # raised inside the stage: deterministic, so not retried
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            return ref, failed(kind, f"{kind}: {type(cause).__name__}: {cause}")
        except rex.RayError as exc:  # dead worker, lost node, OOM kill: retried by Ray, then given up
            reason = f"{kind}: system failure after {self.max_retries} retries: {type(exc).__name__}"
            return ref, failed(kind, reason)

    def cancel(self, handles: list[Any]) -> None:
        """Cancel outstanding tasks; outputs are written atomically, so a killed stage leaves nothing."""
        self._cancelled.update(handles)
        if self._owns or not handles:
            # ray.shutdown() on leaving the executor kills our own workers anyway, and
            # ray.cancel racing a task's completion can abort the driver inside Ray's core
            # worker ("Tried to complete task that was not pending", ray-project/ray#54846),
            # which turned a clean Ctrl-C (exit 130) into exit 1.
            return
        # On a shared cluster the tasks must not run on after we leave; cancel only those still
        # running, which narrows (but cannot close) Ray's race with completion.
        done, _ = self._ray.wait(handles, num_returns=len(handles), timeout=0)
        for ref in set(handles) - set(done):
            try:
                self._ray.cancel(ref, force=True)
            except Exception as exc:  # already finished or already gone
                log.debug("cancel %s: %s", ref, exc)

    def prepare(self, artifact_root: Path) -> None:
        """Every node must see the artifact root; a single node trivially does."""
        if len(self.nodes) > 1:
            check_shared_root(self._ray, self.nodes, artifact_root)
        else:
            artifact_root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> ExecutorInfo:
        """Where work runs."""
        return ExecutorInfo(
            kind="ray",
            address=self.address,
            nodes=len(self.nodes),
            workers=self.workers,
            cpus=sum(n.cpus for n in self.nodes),
            gpus=sum(n.gpus for n in self.nodes),
            cpus_per_task=self.cpus_per_task,
            gpus_per_task=self.gpus_per_task,
            timing_node=self._timing.address,
            timing_cpus=int(self._timing.cpus),
        )


__all__ = ["InfeasibleResources", "RayExecutor"]
