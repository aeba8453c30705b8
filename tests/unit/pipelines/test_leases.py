"""Stage leases: what a live run claims is seen by gc; a dead run's claim is released."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from slimline.pipelines import leases

HOLD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from slimline.pipelines import leases
    with leases.holding(Path(sys.argv[1])):
        leases.claim(Path(sys.argv[1]), ["load-a", "export-b"])
        print("held", flush=True)
        if sys.argv[2] == "die":
            os._exit(9)  # no cleanup: as a SIGKILL leaves it
        time.sleep(60)
    """
)


def _holder(stages: Path, how: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(stages), how], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_lease_is_seen_and_a_dead_one_released(tmp_path: Path) -> None:
    stages = tmp_path / "stages"
    live = _holder(stages, "live")
    try:
        with leases.gate(stages, exclusive=True):
            held = leases.leased(stages)
        assert set(held) == {"load-a", "export-b"} and f"pid {live.pid}" in held["load-a"]
    finally:
        live.kill()
        live.wait()
    # The killed holder left its files behind: gc's next look releases them.
    assert list((stages / ".leases").glob("*.json"))
    with leases.gate(stages, exclusive=True):
        assert leases.leased(stages) == {}
    assert not list((stages / ".leases").glob("*.json"))

    dead = _holder(stages, "die")
    dead.wait()
    with leases.gate(stages, exclusive=True):
        assert leases.leased(stages) == {}


def test_scopes_nest_and_claims_outside_a_scope_are_ignored(tmp_path: Path) -> None:
    stages = tmp_path / "stages"
    leases.claim(stages, ["x"])  # no scope open: nothing to add to, nothing written
    assert not (stages / ".leases").exists()
    with leases.holding(stages):
        assert not (stages / ".leases").exists()  # nothing on disk before a plan claims stages
        with leases.holding(stages):
            leases.claim(stages, ["a"])
        lease = leases.held(stages)
        assert lease is not None and lease.data.is_file()  # the inner block did not release it
        leases.claim(stages, ["b"])
        assert lease.ids == {"a", "b"}
    assert not lease.data.exists() and leases.held(stages) is None
