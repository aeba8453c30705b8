"""Selection: constraints → feasible set → Pareto frontier over the objectives → top_k."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from slimline.pipelines.metrics import maximised
from slimline.pipelines.run.noise import TIMED, Ratio, paired_ratio
from slimline.pipelines.run.records import DONE
from slimline.pipelines.spec.spec import SelectSpec

# Metrics where larger is better; every other objective is minimised.
MAXIMISE = maximised()


def constraint_problems(m: dict[str, Any], spec: SelectSpec) -> list[str]:
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


class Selection(NamedTuple):
    """What selection decided: the picks best first, why the others were not picked, and ties."""

    selected: list[str]
    rejected: dict[str, str]
    ties: dict[str, str]  # variant id -> "tied with X on latency (ratio 0.98, CI [0.93, 1.04])"


def select(
    variants: list[dict[str, Any]], spec: SelectSpec, samples: dict[str, list[float]] | None = None
) -> Selection:
    """Constraints, then the Pareto frontier over the objectives, then top_k, best first.

    With latency `samples` (ms, from interleaved rounds), timed objectives are compared by paired
    ratios (pipelines.noise): a variant beats another on speed only beyond the noise and
    `spec.latency_tolerance`; variants tied on speed are ordered by fidelity, then size.
    """
    rejected: dict[str, str] = {}
    feasible = []
    for v in variants:
        if v["status"] not in DONE:
            rejected[v["id"]] = f"{v['status']}: {v.get('reason') or 'no result'}"
            continue
        why = constraint_problems(v["metrics"], spec)
        if why:
            rejected[v["id"]] = "; ".join(why)
        else:
            feasible.append(v)
    by_id = {v["id"]: v["metrics"] for v in feasible}
    cmp = _Comparer(by_id, spec, samples or {})
    frontier = []
    for vid in by_id:
        by = next((b for b in by_id if b != vid and cmp.dominates(b, vid)), None)
        if by:
            rejected[vid] = f"Pareto-dominated by {by}"
        else:
            frontier.append(vid)
    ordered, ties = cmp.order(frontier)
    for vid in ordered[spec.top_k :]:
        rejected[vid] = f"on the Pareto frontier but outside top_k={spec.top_k}"
    return Selection(ordered[: spec.top_k], rejected, ties)


class _Comparer:
    """Pairwise comparison of variants on each objective: timed ones within the noise."""

    def __init__(self, metrics: dict[str, dict[str, Any]], spec: SelectSpec, samples: dict[str, list[float]]):
        self.metrics, self.spec, self.samples = metrics, spec, samples
        self._ratios: dict[tuple[str, str], Ratio] = {}

    def ratio(self, a: str, b: str) -> Ratio | None:
        """a's latency over b's, when both were timed together."""
        if a not in self.samples or b not in self.samples:
            return None
        if (a, b) not in self._ratios:
            self._ratios[a, b] = paired_ratio(self.samples[a], self.samples[b], self.spec.latency_tolerance)
        return self._ratios[a, b]

    def on(self, objective: str, a: str, b: str) -> int:
        """-1 when a is better than b on `objective`, +1 when worse, 0 when tied."""
        ratio = self.ratio(a, b) if objective in TIMED else None
        if ratio is not None:
            return ratio.verdict
        x, y = _key(self.metrics[a], objective), _key(self.metrics[b], objective)
        if abs(x - y) <= self.spec.tolerance * max(abs(x), abs(y)):
            return 0  # 0.1 MB of 23 MB must not outweigh 4 points of fidelity: let quality decide
        return (x > y) - (x < y)

    def dominates(self, b: str, a: str) -> bool:
        """b is no worse than a on every objective and better on one."""
        verdicts = [self.on(o, b, a) for o in self.spec.objectives]
        return all(v <= 0 for v in verdicts) and any(v < 0 for v in verdicts)

    def key(self, vid: str) -> tuple[float, ...]:
        """The objectives' values, each turned so that smaller is better."""
        return tuple(_key(self.metrics[vid], o) for o in self.spec.objectives)

    def quality(self, vid: str) -> tuple[float, float]:
        """What breaks a tie on speed: fidelity (higher first), then size (smaller first)."""
        m = self.metrics[vid]
        return -float(m.get("fidelity", 0.0)), float(m.get("size_mb", 0.0))

    def order(self, frontier: list[str]) -> tuple[list[str], dict[str, str]]:
        """Best first. With a timed first objective: groups of variants tied with the group's
        fastest member (by median), each group ordered by fidelity, then size."""
        first = self.spec.objectives[0]
        if first not in TIMED or not all(v in self.samples for v in frontier):
            return sorted(frontier, key=lambda vid: (self.key(vid), vid)), {}
        groups: list[list[str]] = []
        for vid in sorted(frontier, key=lambda v: (self.key(v), v)):
            if groups and self.on(first, vid, groups[-1][0]) == 0:
                groups[-1].append(vid)
            else:
                groups.append([vid])
        ties: dict[str, str] = {}
        ordered: list[str] = []
        for leader, *rest in groups:
            for vid in rest:
                ties[vid] = f"tied with {leader} on latency ({self.ratio(vid, leader)})"
            ordered += sorted([leader, *rest], key=lambda v: (self.quality(v), self.key(v), v))
        return ordered, ties


def gate(
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    spec: SelectSpec,
    *,
    ratio: list[float] | None = None,
    min_gain: float = 0.05,
    fidelity_epsilon: float = 0.005,
) -> tuple[bool, str]:
    """Whether the alias may move from `champion` to `candidate`, and why.

    Both metric dicts were measured in this run; `ratio` is [median, CI low, CI high] of the
    candidate's paired latency over the champion's. The candidate must meet every constraint,
    then beat the champion on the first objective by more than `min_gain` (a timed objective:
    the whole CI of the ratio below 1 - min_gain), or be as good on it (a timed objective: the
    CI within min_gain of 1) and better on fidelity by more than `fidelity_epsilon`.
    """
    problems = constraint_problems(candidate, spec)
    if problems:
        return False, f"candidate: {'; '.join(problems)}"
    if champion is None:
        return True, "no current champion"
    first = spec.objectives[0]
    if first in TIMED:
        if ratio is None:
            return False, f"{first}: the champion was not timed beside the candidate in this run"
        med, low, high = ratio
        numbers = f"latency ratio to the champion {med:.3f}, CI [{low:.3f}, {high:.3f}]"
        better, same = high < 1 - min_gain, low >= 1 - min_gain and high <= 1 + min_gain
    else:
        if not math.isfinite(float(champion.get(first, math.nan))):
            return False, f"the champion's {first} is missing or not finite: nothing to compare with"
        new, old = _key(candidate, first), _key(champion, first)
        numbers = f"{first} {candidate[first]:.4g} against the champion's {champion[first]:.4g}"
        better, same = new < old - abs(old) * min_gain, abs(new - old) <= abs(old) * min_gain
    if better:
        return True, f"beats the champion by more than {min_gain:.0%}: {numbers}"
    gain = float(candidate.get("fidelity", math.nan)) - float(champion.get("fidelity", math.nan))
    if same and gain > fidelity_epsilon:
        return True, f"as fast as the champion and {gain:+.4f} fidelity: {numbers}"
    return False, f"does not beat the champion beyond the noise (min gain {min_gain:.0%}): {numbers}"
