"""Ctrl-C cannot be lost: a KeyboardInterrupt swallowed on its way is raised again at the next stage event."""

from __future__ import annotations

import contextlib
import io
import os
import signal

import pytest
from rich.console import Console

from slimline.cli.interrupt import CtrlC, InterruptibleProgress
from slimline.pipelines.plan.plan import Stage

STAGE = Stage("export-1", "export", {}, None, "export none")


def _progress(ctrl_c: CtrlC) -> InterruptibleProgress:
    return InterruptibleProgress(ctrl_c, console=Console(file=io.StringIO()), title="t")


def test_a_swallowed_ctrl_c_stops_the_run_at_the_next_stage_event() -> None:
    before = signal.getsignal(signal.SIGINT)
    with CtrlC() as ctrl_c:
        progress = _progress(ctrl_c)
        progress.started(STAGE)  # nothing pressed: nothing raised
        # Raised at once, as Python's own handler does, and lost on its way (as inside Ray's wait).
        with contextlib.suppress(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            progress.finished(STAGE, {"status": "succeeded"})
        progress.finished(STAGE, {"status": "succeeded"})  # raised once, not at every event after
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back


def test_a_terminal_is_told_where_results_go_and_that_ray_starts(tmp_path) -> None:
    """issue 26: 13-23 s of nothing while Ray started, and no word of which store a run used."""
    from types import SimpleNamespace

    from slimline.cli.main import _start_lines

    db = tmp_path / "new.db"
    lines = _start_lines(SimpleNamespace(uri=f"sqlite:///{db}"), "ray", None)
    assert lines == [
        f"registry: {db} (a new store: this run creates it)",
        "starting Ray: an embedded cluster on this machine",
    ]
    db.write_bytes(b"")
    assert _start_lines(SimpleNamespace(uri=f"sqlite:///{db}"), "local", None) == [f"registry: {db}"]
