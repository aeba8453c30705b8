"""Selection edge cases: nothing feasible, ties, a single variant, dominance and top_k."""

from __future__ import annotations

from slimline.pipelines.select import gate, select
from slimline.pipelines.spec import Bound, SelectSpec


def _v(vid: str, status: str = "succeeded", **metrics: float) -> dict:
    return {
        "id": vid,
        "status": status,
        "metrics": metrics,
        "reason": None if status == "succeeded" else "boom",
    }


SPEC = SelectSpec.model_validate(
    {"constraints": {"fidelity": {"min": 0.98}}, "objectives": ["latency_p50_ms", "size_mb"], "top_k": 2}
)


def test_nothing_feasible() -> None:
    chosen, rejected = select([_v("a", fidelity=0.5, latency_p50_ms=1, size_mb=1)], SPEC)
    assert chosen == [] and "fidelity 0.5 < min 0.98" in rejected["a"]


def test_single_variant_is_selected() -> None:
    assert select([_v("a", fidelity=0.99, latency_p50_ms=1, size_mb=1)], SPEC) == (["a"], {})


def test_dominated_and_failed_are_rejected_with_reasons() -> None:
    vs = [
        _v("fast", fidelity=0.99, latency_p50_ms=1, size_mb=10),
        _v("small", fidelity=0.99, latency_p50_ms=5, size_mb=2),
        _v("worse", fidelity=0.99, latency_p50_ms=6, size_mb=11),
        _v("broken", status="failed"),
    ]
    chosen, rejected = select(vs, SPEC)
    assert chosen == ["fast", "small"]
    assert rejected["worse"].startswith("Pareto-dominated by")
    assert rejected["broken"] == "failed: boom"


def test_ties_are_all_kept_in_a_stable_order_and_top_k_applies() -> None:
    vs = [_v(i, fidelity=0.99, latency_p50_ms=1, size_mb=1) for i in ("c", "a", "b")]
    chosen, rejected = select(vs, SPEC)
    assert chosen == ["a", "b"]
    assert "outside top_k=2" in rejected["c"]


def test_maximised_objective() -> None:
    spec = SelectSpec.model_validate({"objectives": ["fidelity"], "top_k": 1})
    chosen, _ = select([_v("lo", fidelity=0.9), _v("hi", fidelity=0.99)], spec)
    assert chosen == ["hi"]


def test_champion_gate() -> None:
    spec = SelectSpec(constraints={"fidelity": Bound(min=0.9)}, objectives=["latency_p50_ms", "size_mb"])
    fast = {"fidelity": 0.95, "latency_p50_ms": 10.0, "size_mb": 20.0}
    slow = {"fidelity": 0.99, "latency_p50_ms": 12.0, "size_mb": 10.0}
    assert gate(fast, None, spec) == (True, "no current champion")
    moved, why = gate(fast, slow, spec)
    assert moved and "beats" in why
    stays, why = gate(slow, fast, spec)  # better on size, but size is not the first objective
    assert not stays and "does not beat" in why
    assert not gate(fast, fast, spec)[0]  # a tie does not move the alias
    unfaithful = {**fast, "fidelity": 0.5}
    assert gate(unfaithful, None, spec) == (False, "candidate fidelity 0.5 is outside the constraint")
    # Larger-is-better objectives compare the other way round.
    by_fidelity = SelectSpec(objectives=["fidelity"])
    assert gate(slow, fast, by_fidelity)[0] and not gate(fast, slow, by_fidelity)[0]
