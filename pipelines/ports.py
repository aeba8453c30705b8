"""The ports: the protocols the adapters in cluster/ and registry/ implement, and their data.

`pipelines` owns every policy (selection, the champion gate, the manifest); an adapter only
says where stages run (Executor) or stores what it is told (Registry).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from slimline.tasks.base import Record

if TYPE_CHECKING:
    from slimline.pipelines.plan.plan import Plan, Stage
    from slimline.pipelines.spec.spec import ServingLoad, Spec


class Observer(Protocol):
    """Watches a run: the progress display implements it; every method is called on the driver."""

    def planned(self, plan: Plan) -> None:
        """The plan is known; nothing has run yet."""
        ...

    def started(self, stage: Stage) -> None:
        """`stage` was handed to the executor."""
        ...

    def finished(self, stage: Stage, record: Record) -> None:
        """`stage` finished (or came from the cache) with `record`."""
        ...

    def note(self, line: str) -> None:
        """What the run does now that is no stage (e.g. serving the pick): one line."""
        ...


class NullObserver:
    """Watches nothing."""

    def planned(self, plan: Plan) -> None:
        pass

    def started(self, stage: Stage) -> None:
        pass

    def finished(self, stage: Stage, record: Record) -> None:
        pass

    def note(self, line: str) -> None:
        pass


@dataclass(frozen=True)
class ExecutorInfo:
    """Where work runs: what the scheduler and the manifest need to know about an executor."""

    kind: str  # "ray" or "local"
    workers: int  # how many stages can run at once
    timing_node: str  # the node whose CPUs time latency
    timing_cpus: int  # how many CPUs that node gives the timing task
    address: str | None = None
    nodes: int = 1
    cpus: float = 0
    gpus: float = 0
    cpus_per_task: float = 1
    gpus_per_task: float = 0


class Executor(Protocol):
    """Runs stages somewhere. Handles are opaque; `wait` returns the first one to finish.

    A stage carries its own `resources` ({"num_cpus", "num_gpus"}); an executor that schedules
    by resources honours them. Every record it returns carries a `status` (pipelines.records):
    a record without one counts as failed.
    """

    def submit(
        self, stage: dict[str, Any], inputs: dict[str, Record], ctx: Any, *, exclusive: bool = False
    ) -> Any:
        """Start a stage; `exclusive` asks for a whole node (latency timing)."""
        ...

    def wait(self, handles: list[Any]) -> tuple[Any, Record]:
        """Block until one of `handles` finishes; return it with its record."""
        ...

    def cancel(self, handles: list[Any]) -> None:
        """Stop outstanding work, at the latest when the executor is closed (the run is over then:
        nothing is waited for after a cancel)."""
        ...

    def describe(self) -> ExecutorInfo:
        """Where work runs: kind, workers, resources."""
        ...

    def prepare(self, artifact_root: Path) -> None:
        """Check, before any work, that stages can run here (e.g. every node sees the artifact root)."""
        ...


@dataclass
class TrackedRun:
    """A run as a registry recorded it: the parent run and one child per variant, by variant id."""

    parent: str
    children: dict[str, str] = field(default_factory=dict)
    experiment: str = ""  # where the store keeps the run (an MLflow experiment id)


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model, with the metrics it was registered with."""

    name: str
    version: str
    variant: str | None
    metrics: dict[str, float]


class Registry(Protocol):
    """Where results go: tracking runs, model versions and aliases. Every write is idempotent:
    a variant is tracked and registered at most once, however often a run is published."""

    def check(self) -> None:
        """Raise FatalInputError (exit 2) unless the store can be reached."""
        ...

    def describe(self) -> str:
        """The store, as a URI (or a word for a store that keeps nothing)."""
        ...

    def track(self, manifest: dict[str, Any], spec: Spec, log_models: Sequence[str] = ()) -> TrackedRun:
        """Record the run and its variants, with the ONNX models of the variant ids in `log_models`
        (which ones is the caller's policy: `registry.log_models` in the spec)."""
        ...

    def register(
        self, name: str, row: dict[str, Any], manifest: dict[str, Any], run: TrackedRun
    ) -> str | None:
        """The version of model `name` holding variant `row` (created once); None without a model file."""
        ...

    def alias_holder(self, name: str, alias: str) -> RegisteredVersion | None:
        """The version `alias` points at, or None."""
        ...

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point `alias` at `version`."""
        ...

    def fetch(self, name: str, version: str, dest: Path) -> Path:
        """Put a version's graph folder (model.onnx, tokenizer, meta.json) in `dest`; its model.onnx."""
        ...

    def aliases_of(self, name: str, version: str) -> list[str]:
        """The aliases that point at `version`, sorted."""
        ...

    def finish(self, run: TrackedRun, manifest: dict[str, Any], run_dir: Path) -> None:
        """Attach the final manifest and reports to the run and close it."""
        ...


class ServingProbe(Protocol):
    """Serves graph folders side by side and loads each alike (`evaluate.serving`)."""

    def measure(self, graphs: dict[str, Path], load: ServingLoad, texts: list[str]) -> dict[str, Record]:
        """Per key of `graphs`: the served load's `rounds` (each {rps, texts_per_s, p50_ms,
        p99_ms, errors, requests}) and their medians; raises on a deployment that never came up."""
        ...
