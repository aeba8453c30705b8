"""The live progress display: one line per variant with the stage it is at (rich, on stderr)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from slimline.pipelines.plan.plan import Plan, Stage
from slimline.pipelines.run.records import Status
from slimline.tasks.base import Record

STYLE = {"running": "cyan", "done": "green", "cached": "blue", "failed": "red", "skipped": "yellow"}


class SweepProgress:
    """An Observer that renders the sweep as it runs.

    On a terminal it is a live table; elsewhere (CI logs, cron, Ray job logs) it prints one line
    per finished stage, which reads better in a log than repeated tables.
    """

    def __init__(self, console: Console | None = None, *, title: str = "sweep") -> None:
        self.console = console or Console(stderr=True)
        self.title = title
        self._live: Live | None = None
        self._variants: dict[str, list[str]] = defaultdict(list)  # stage id -> variant ids
        self._labels: dict[str, str] = {}
        self._state: dict[str, tuple[str, str]] = {}  # variant id -> (state, detail)
        self._start = time.monotonic()
        self._counts = {"done": 0, "total": 0}
        self._rungs: dict[str, int] = {}  # search trial -> the highest rung it reported
        self._best: tuple[float, str] | None = None  # a search's best feasible score, and its label
        self._doing: Spinner | None = None  # what happens before the first stage event

    def __enter__(self) -> SweepProgress:
        if not self.console.is_terminal:
            return self
        # Rendered afresh at each refresh: the clock and the spinner move while nothing else does.
        self._live = Live(
            console=self.console, get_renderable=self._render, refresh_per_second=4, transient=False
        )
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.__exit__(None, None, None)
            self._live = None

    def planned(self, plan: Plan) -> None:
        """Learn which variants each stage serves."""
        for v in plan.variants:
            self._labels[v.id] = v.label
            if v.status == Status.SKIPPED:
                self._state[v.id] = (Status.SKIPPED, v.reason or "")
                continue
            self._state[v.id] = ("waiting", "")
            for sid in v.stages:
                self._variants[sid].append(v.id)
        self._counts["total"] = len(plan.stages)
        self._refresh()

    def doing(self, what: str) -> None:
        """Say what the run waits on (Ray starting): a spinner on a terminal until the first stage."""
        self._doing = Spinner("dots", Text(what, style="cyan"))  # one object: it turns with time
        self._refresh()

    def started(self, stage: Stage) -> None:
        """Mark the variants this stage serves as running it."""
        self._doing = None
        for vid in self._served(stage):
            self._state[vid] = ("running", stage.kind)
        self._refresh()

    def finished(self, stage: Stage, record: Record) -> None:
        """Mark the variants this stage serves with its outcome."""
        self._doing = None
        status = record.get("status", Status.SUCCEEDED)
        if stage.kind != "latency":
            self._counts["done"] += 1
        for vid in self._served(stage):
            if self._state[vid][0] == Status.FAILED:
                continue
            if status in (Status.FAILED, Status.SKIPPED):
                self._state[vid] = (status, str(record.get("reason") or "")[:70])
            elif record.get("cached"):
                self._state[vid] = ("cached", stage.kind)
            else:
                secs = record.get("seconds")
                self._state[vid] = ("done", stage.kind + (f" {secs:.1f}s" if secs else ""))
        if self._live is None and not record.get("cached"):
            self._log(stage, record)
        self._refresh()

    def note(self, line: str) -> None:
        """One line of what the run does between stages."""
        elapsed = time.monotonic() - self._start
        self.console.print(f"[{elapsed:6.1f}s] {line}", highlight=False, markup=False, soft_wrap=True)

    def trial(self, entry: dict[str, Any]) -> None:
        """A search trial reported a rung: one line, the trials by rung, the best so far."""
        last = entry["rungs"][-1]
        self._rungs[entry["trial"]] = int(last["rung"])
        m = last.get("metrics") or {}
        if last.get("feasible") and (self._best is None or last["score"] > self._best[0]):
            self._best = (float(last["score"]), str(entry.get("label")))
        verdict = "feasible" if last.get("feasible") else f"infeasible: {last.get('why')}"
        quality = ", ".join(f"{k} {m[k]:.3f}" for k in ("fidelity", "top1_agreement") if k in m)
        elapsed = time.monotonic() - self._start
        self.console.print(
            f"[{elapsed:6.1f}s] trial {entry['trial']} rung {last['rung']}: {entry.get('label')}: "
            f"score {last['score']:.4g} ({quality}) {verdict}"[:220],
            highlight=False,
            markup=False,
            soft_wrap=True,  # one line per event in a log, however narrow the console thinks it is
        )
        self._refresh()

    def _search_line(self) -> str:
        by_rung: dict[int, int] = defaultdict(int)
        for r in self._rungs.values():
            by_rung[r] += 1
        counts = ", ".join(f"rung {r}: {n}" for r, n in sorted(by_rung.items()))
        best = f"; best so far {self._best[0]:.4g} ({self._best[1]})" if self._best else ""
        return f"\nsearch: {len(self._rungs)} trials reported ({counts}){best}"

    def _log(self, stage: Stage, record: Record) -> None:
        status = record.get("status", Status.SUCCEEDED)
        secs = record.get("seconds")
        detail = f" ({secs:.1f}s)" if secs else ""
        if record.get("reason"):
            detail += f": {record['reason']}"
        elapsed = time.monotonic() - self._start
        self.console.print(
            f"[{elapsed:6.1f}s] {status:<9} {stage.kind:<9} {stage.label}{detail}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def _served(self, stage: Stage) -> list[str]:
        if stage.kind == "latency":  # one timing task for every variant still standing
            return [
                vid for vid, (state, _) in self._state.items() if state not in (Status.FAILED, Status.SKIPPED)
            ]
        return self._variants.get(stage.id, [])

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def _render(self) -> Any:
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        table.add_column("variant", no_wrap=True)
        table.add_column("state", no_wrap=True)
        table.add_column("stage / reason", overflow="ellipsis", no_wrap=True)
        for vid, (state, detail) in self._state.items():
            table.add_row(self._labels[vid], Text(state, style=STYLE.get(state, "")), detail)
        elapsed = time.monotonic() - self._start
        head = Text(
            f"{self.title}: {self._counts['done']}/{self._counts['total']} stages, {elapsed:.0f}s"
            + (self._search_line() if self._rungs else ""),
            style="bold",
        )
        if self._doing is None:
            return Group(head, table)
        return Group(head, self._doing, table)
