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
    assert gate(unfaithful, None, spec) == (False, "candidate: fidelity 0.5 < min 0.9")
    # Larger-is-better objectives compare the other way round.
    by_fidelity = SelectSpec(objectives=["fidelity"])
    assert gate(slow, fast, by_fidelity)[0] and not gate(fast, slow, by_fidelity)[0]


def test_non_finite_metrics_are_never_selected_nor_gated_in() -> None:
    nan, inf = float("nan"), float("inf")
    variants = [
        _v("nan", fidelity=nan, latency_p50_ms=1, size_mb=1),  # NaN < 0.98 is False: no bound catches it
        _v("inf", fidelity=0.99, latency_p50_ms=inf, size_mb=1),
        _v("ok", fidelity=0.99, latency_p50_ms=5, size_mb=5),
    ]
    chosen, rejected = select(variants, SPEC)
    assert chosen == ["ok"]
    assert rejected["nan"] == "fidelity is not finite" and rejected["inf"] == "latency_p50_ms is not finite"
    assert gate(variants[0]["metrics"], None, SPEC) == (False, "candidate: fidelity is not finite")
    moved, why = gate(variants[2]["metrics"], {"latency_p50_ms": nan}, SPEC)
    assert not moved and "not finite" in why
