"""The live progress display on a terminal: never silent while Ray starts (issue 26)."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace

from rich.console import Console
from rich.spinner import Spinner

from slimline.pipelines.report.progress import SweepProgress

SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"  # rich's "dots"


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100, color_system=None), out


def test_a_spinner_says_what_the_run_waits_on_until_the_first_stage_event() -> None:
    console, out = _terminal()
    with SweepProgress(console, title="t") as progress:
        progress.doing("starting Ray: an embedded cluster on this machine")
        time.sleep(1.3)  # auto-refresh, with nothing else happening: the spinner turns, the clock moves
        drawn = out.getvalue()
        assert "starting Ray: an embedded cluster on this machine" in drawn
        assert len({c for c in drawn if c in SPINNER_FRAMES}) >= 2, "the spinner did not turn"
        assert "t: 0/0 stages, 1s" in drawn, "the clock did not move"
        stage = SimpleNamespace(id="s1", kind="export", label="export x")
        progress.finished(stage, {"status": "succeeded", "cached": True})
        # The first stage event ends the wait: the spinner goes.
        assert not [r for r in progress._render().renderables if isinstance(r, Spinner)]


def test_a_log_gets_no_spinner_and_no_redraws() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    with SweepProgress(console, title="t") as progress:
        progress.doing("starting Ray: an embedded cluster on this machine")
        time.sleep(0.5)
    assert out.getvalue() == ""
