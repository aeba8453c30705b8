"""The ports: protocols the adapters in cluster/ and registry/ implement."""

from __future__ import annotations

from typing import Any, Protocol

from tasks.base import Record


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


class LocalExecutor:
    """In-process, serial: for debugging and unit tests. `submit` runs the stage immediately."""

    def __init__(self) -> None:
        self._done: dict[int, Record] = {}
        self._next = 0

    def submit(
        self, stage: dict[str, Any], inputs: dict[str, Record], ctx: Any, *, exclusive: bool = False
    ) -> int:
        from pipelines.stages import run_stage

        self._next += 1
        self._done[self._next] = run_stage(stage, inputs, ctx)
        return self._next

    def wait(self, handles: list[int]) -> tuple[int, Record]:
        handle = handles[0]
        return handle, self._done.pop(handle)

    def cancel(self, handles: list[int]) -> None:
        for h in handles:
            self._done.pop(h, None)

    def describe(self) -> dict[str, Any]:
        return {"kind": "local", "workers": 1}
