"""The ports: protocols the adapters in cluster/ and registry/ implement."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tasks.base import Record

if TYPE_CHECKING:
    from pipelines.plan import Plan, Stage


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


class Registry(Protocol):
    """Where results go: tracking runs, model versions and the champion alias."""

    def check(self) -> None:
        """Raise FatalInputError (exit 2) unless the store can be reached."""
        ...

    def describe(self) -> str:
        """The store, as a URI."""
        ...

    def publish(self, manifest: dict[str, Any], spec: Any, run_dir: Path) -> dict[str, Any]:
        """Record a finished run and register its selection; returns the updated manifest."""
        ...


class NullObserver:
    """Watches nothing."""

    def planned(self, plan: Plan) -> None:
        pass

    def started(self, stage: Stage) -> None:
        pass

    def finished(self, stage: Stage, record: Record) -> None:
        pass


class Executor(Protocol):
    """Runs stages somewhere. Handles are opaque; `wait` returns the first one to finish."""

    def submit(
        self, stage: dict[str, Any], inputs: dict[str, Record], ctx: Any, *, exclusive: bool = False
    ) -> Any:
        """Start a stage; `exclusive` asks for a whole node (latency timing)."""
        ...

    def wait(self, handles: list[Any]) -> tuple[Any, Record]:
        """Block until one of `handles` finishes; return it with its record."""
        ...

    def cancel(self, handles: list[Any]) -> None:
        """Cancel outstanding work."""
        ...

    def describe(self) -> dict[str, Any]:
        """Where work runs: kind, workers, resources."""
        ...

    def prepare(self, artifact_root: Path) -> None:
        """Check, before any work, that stages can run here (e.g. every node sees the artifact root)."""
        ...


class LocalExecutor:
    """In-process, serial: for debugging and unit tests. `submit` runs the stage immediately.

    Like the Ray executor, an unexpected exception in a stage becomes a failed record so the
    sweep goes on; `reraise=True` (the CLI's --debug) lets it propagate with its traceback.
    """

    def __init__(self, *, reraise: bool = False) -> None:
        self._done: dict[int, Record] = {}
        self._next = 0
        self._reraise = reraise

    def submit(
        self, stage: dict[str, Any], inputs: dict[str, Record], ctx: Any, *, exclusive: bool = False
    ) -> int:
        from pipelines.stages import run_stage

        self._next += 1
        try:
            self._done[self._next] = run_stage(stage, inputs, ctx)
        except Exception as exc:
            if self._reraise:
                raise
            kind = stage["kind"]
            self._done[self._next] = {
                "status": "failed",
                "reason": f"{kind}: {type(exc).__name__}: {exc}",
                "kind": kind,
            }
        return self._next

    def wait(self, handles: list[int]) -> tuple[int, Record]:
        handle = handles[0]
        return handle, self._done.pop(handle)

    def cancel(self, handles: list[int]) -> None:
        for h in handles:
            self._done.pop(h, None)

    def prepare(self, artifact_root: Path) -> None:
        artifact_root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> dict[str, Any]:
        import os
        import platform

        cpus = os.cpu_count() or 1
        return {"kind": "local", "workers": 1, "timing_node": platform.node(), "timing_cpus": cpus}
