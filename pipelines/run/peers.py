"""Every run against the peers: its pick beside the best one-line int8 recipe a user would try first.

The peers (`baselines:`; tasks/quantization/peers.py) are variants like any other, timed in the
same interleaved latency phase, but never selected. Here the pick (the first selected variant) is
compared with the best peer: the fastest that meets the constraints (the fastest of all when none
does, and said so), by the paired ratio of their timings and its bootstrap CI, the same noise-aware
comparison selection uses. A peer that wins is reported as a win; `select.beat_peers` then keeps
the run from registering anything (pipelines.run.publish).
"""

from __future__ import annotations

import math
import platform
from typing import Any

from slimline.pipelines.run.noise import paired_ratio
from slimline.pipelines.run.records import DONE
from slimline.pipelines.run.select import constraint_problems
from slimline.pipelines.spec.spec import SelectSpec, Spec
from slimline.tasks.base import TechniqueConfig
from slimline.tasks.cpu_probe import cpu_flags

PICK_FASTER, TIED, PEER_FASTER = "pick faster", "tied", "peer faster"


def peers_for(spec: Spec) -> tuple[TechniqueConfig, ...]:
    """The spec's peer recipes on this machine's CPU (what `optimum-auto` means here)."""
    return tuple(spec.peer_configs(cpu_flags(), platform.machine()))


def compare_peers(
    rows: list[dict[str, Any]], selected: list[str], samples: dict[str, list[float]], spec: SelectSpec
) -> dict[str, Any] | None:
    """The manifest's `peers` section: which peers ran, the best, and the pick against it."""
    peers = [r for r in rows if r.get("peer") and r["status"] in DONE and r["id"] in samples]
    if not peers:
        return None
    fitting = [r for r in peers if not constraint_problems(r["metrics"], spec)]
    best = min(fitting or peers, key=lambda r: r["metrics"].get("latency_p50_ms", math.inf))
    out: dict[str, Any] = {
        "peers": {r["peer"]: r["id"] for r in peers},
        "best": best["peer"],
        "best_variant": best["id"],
        "best_fits": bool(fitting),
    }
    if not selected:
        return {**out, "verdict": None}
    pick = next(r for r in rows if r["id"] == selected[0])
    # peer / pick: above 1 the pick is faster by that factor
    ratio = paired_ratio(samples[best["id"]], samples[pick["id"]], spec.latency_tolerance)
    verdict = {1: PICK_FASTER, -1: PEER_FASTER, 0: TIED}[ratio.verdict]
    fid = pick["metrics"].get("fidelity", math.nan) - best["metrics"].get("fidelity", math.nan)
    return {
        **out,
        # The pick is the peer's own graph, byte for byte (timed once): the recipe, not slimline, won.
        "same_graph": pick.get("same_graph_as", pick["id"]) == best.get("same_graph_as", best["id"]),
        "pick": pick["id"],
        "speedup": ratio.median,
        "ci": [ratio.low, ratio.high],
        "fidelity_delta": fid,
        "verdict": verdict,
    }


def lost_to_a_peer(section: dict[str, Any] | None) -> bool:
    """Whether a peer that meets the constraints was faster than the pick beyond the noise."""
    return bool(section) and section.get("verdict") == PEER_FASTER and bool(section.get("best_fits"))


def outcome_line(section: dict[str, Any] | None) -> str | None:
    """The report's first line: the pick against the best peer, in words (a peer's win included)."""
    if not section:
        return None
    best = section["best"]
    note = "" if section["best_fits"] else " (no peer meets the constraints: the fastest shown)"
    if section.get("verdict") is None:
        return f"nothing selected; the best peer is {best}{note}"
    if section.get("same_graph"):
        return f"pick vs best peer ({best}): the same graph, byte for byte (the pick is that recipe){note}"
    low, high = section["ci"]
    fid = f"at fidelity {section['fidelity_delta']:+.4f}"
    if section["verdict"] == PEER_FASTER:
        return (
            f"a peer won: {best} is {1 / section['speedup']:.2f}x faster than the pick "
            f"(CI {1 / high:.2f}-{1 / low:.2f}), pick {fid}{note}"
        )
    if section["verdict"] == TIED:
        return (
            f"pick vs best peer ({best}): tied within the noise, ratio {section['speedup']:.2f} "
            f"(CI {low:.2f}-{high:.2f}) {fid}{note}"
        )
    faster = f"{section['speedup']:.2f}x faster (CI {low:.2f}-{high:.2f})"
    return f"pick vs best peer ({best}): {faster} {fid}{note}"
