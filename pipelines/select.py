"""Selection: constraints → feasible set → Pareto frontier over the objectives → top_k."""

from __future__ import annotations

import math
from typing import Any

from .records import DONE
from .spec import SelectSpec

# Metrics where larger is better; every other objective is minimised.
MAXIMISE = {"fidelity", "accuracy", "throughput", "speedup_vs_baseline"}


def _problems(m: dict[str, Any], spec: SelectSpec) -> list[str]:
    """Why a variant's metrics make it infeasible: unmeasured, not finite, or out of bounds."""
    why = []
    for name in sorted({*spec.constraints, *spec.objectives}):
        value = m.get(name)
        if value is None:
            why.append(f"{name} not measured")
        elif not math.isfinite(float(value)):  # NaN compares false with any bound: never feasible
            why.append(f"{name} is not finite")
        elif name in spec.constraints:
            bound = spec.constraints[name]
            if bound.min is not None and value < bound.min:
                why.append(f"{name} {value:.4g} < min {bound.min:g}")
            elif bound.max is not None and value > bound.max:
                why.append(f"{name} {value:.4g} > max {bound.max:g}")
    return why


def _key(metrics: dict[str, Any], objective: str) -> float:
    value = float(metrics[objective])
    return -value if objective in MAXIMISE else value


def select(variants: list[dict[str, Any]], spec: SelectSpec) -> tuple[list[str], dict[str, str]]:
    """Return (selected ids best first, {rejected id: reason}) for succeeded/cached variants."""
    rejected: dict[str, str] = {}
    feasible = []
    for v in variants:
        if v["status"] not in DONE:
            rejected[v["id"]] = f"{v['status']}: {v.get('reason') or 'no result'}"
            continue
        why = _problems(v["metrics"], spec)
        if why:
            rejected[v["id"]] = "; ".join(why)
        else:
            feasible.append(v)
    if not feasible:
        return [], rejected
    keys = {v["id"]: tuple(_key(v["metrics"], o) for o in spec.objectives) for v in feasible}

    def dominated(a: str) -> str | None:
        for b in keys:
            if b != a and all(x <= y for x, y in zip(keys[b], keys[a], strict=True)) and keys[b] != keys[a]:
                return b
        return None

    frontier = []
    for v in feasible:
        by = dominated(v["id"])
        if by:
            rejected[v["id"]] = f"Pareto-dominated by {by}"
        else:
            frontier.append(v["id"])
    # Best first: by the objectives in priority order; ties broken by id so the order is stable.
    frontier.sort(key=lambda vid: (keys[vid], vid))
    for vid in frontier[spec.top_k :]:
        rejected[vid] = f"on the Pareto frontier but outside top_k={spec.top_k}"
    return frontier[: spec.top_k], rejected


def gate(candidate: dict[str, Any], champion: dict[str, Any] | None, spec: SelectSpec) -> tuple[bool, str]:
    """Whether the alias may move from `champion` to `candidate` (both metric dicts), and why.

    The candidate must meet every constraint and beat the champion on the first objective;
    with no champion yet, meeting the constraints is enough.
    """
    problems = _problems(candidate, spec)
    if problems:
        return False, f"candidate: {'; '.join(problems)}"
    first = spec.objectives[0]
    if champion is None:
        return True, "no current champion"
    if champion.get(first) is None or not math.isfinite(float(champion[first])):
        return False, f"the champion's {first} is missing or not finite: nothing to compare with"
    new, old = _key(candidate, first), _key(champion, first)
    if new < old:
        return True, f"{first} {candidate[first]:.4g} beats the champion's {champion[first]:.4g}"
    return False, f"{first} {candidate[first]:.4g} does not beat the champion's {champion[first]:.4g}"
