"""Selection edge cases: nothing feasible, ties, a single variant, dominance and top_k."""

from __future__ import annotations

import numpy as np

from slimline.pipelines.run.noise import paired_ratio
from slimline.pipelines.run.select import gate, select
from slimline.pipelines.spec.spec import Bound, SelectSpec


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
    chosen, rejected, _ = select([_v("a", fidelity=0.5, latency_p50_ms=1, size_mb=1)], SPEC)
    assert chosen == [] and "fidelity 0.5 < min 0.98" in rejected["a"]


def test_single_variant_is_selected() -> None:
    assert select([_v("a", fidelity=0.99, latency_p50_ms=1, size_mb=1)], SPEC) == (["a"], {}, {})


def test_dominated_and_failed_are_rejected_with_reasons() -> None:
    vs = [
        _v("fast", fidelity=0.99, latency_p50_ms=1, size_mb=10),
        _v("small", fidelity=0.99, latency_p50_ms=5, size_mb=2),
        _v("worse", fidelity=0.99, latency_p50_ms=6, size_mb=11),
        _v("broken", status="failed"),
    ]
    chosen, rejected, _ = select(vs, SPEC)
    assert chosen == ["fast", "small"]
    assert rejected["worse"].startswith("Pareto-dominated by")
    assert rejected["broken"] == "failed: boom"


def test_ties_are_all_kept_in_a_stable_order_and_top_k_applies() -> None:
    vs = [_v(i, fidelity=0.99, latency_p50_ms=1, size_mb=1) for i in ("c", "a", "b")]
    chosen, rejected, _ = select(vs, SPEC)
    assert chosen == ["a", "b"]
    assert "outside top_k=2" in rejected["c"]


def test_maximised_objective() -> None:
    spec = SelectSpec.model_validate({"objectives": ["fidelity"], "top_k": 1})
    chosen, _, _ = select([_v("lo", fidelity=0.9), _v("hi", fidelity=0.99)], spec)
    assert chosen == ["hi"]


def test_champion_gate() -> None:
    spec = SelectSpec(constraints={"fidelity": Bound(min=0.9)}, objectives=["latency_p50_ms", "size_mb"])
    new = {"fidelity": 0.95, "latency_p50_ms": 10.0, "size_mb": 20.0}
    old = {"fidelity": 0.99, "latency_p50_ms": 12.0, "size_mb": 10.0}
    assert gate(new, None, spec) == (True, "no current champion")
    # Timed first objective: judged by the paired ratio measured in this run, never by medians.
    assert not gate(new, old, spec)[0] and "not timed beside" in gate(new, old, spec)[1]
    moved, why = gate(new, old, spec, ratio=[0.8, 0.75, 0.86])
    assert moved and why.startswith("beats the champion by more than 5%")
    stays, why = gate(new, old, spec, ratio=[0.93, 0.85, 1.02])  # faster, but not beyond the noise
    assert not stays and "does not beat" in why
    tie = [1.0, 0.98, 1.02]
    assert not gate(new, old, spec, ratio=tie)[0]  # as fast, and less faithful
    moved, why = gate({**new, "fidelity": 0.999}, old, spec, ratio=tie)
    assert moved and "+0.0090 fidelity" in why
    unfaithful = {**new, "fidelity": 0.5}
    assert gate(unfaithful, None, spec) == (False, "candidate: fidelity 0.5 < min 0.9")
    # Other first objectives compare values, with the same minimum gain; larger-is-better flips.
    by_fidelity = SelectSpec(objectives=["fidelity"])
    assert gate(old, new, by_fidelity, min_gain=0.01)[0] and not gate(new, old, by_fidelity, min_gain=0.01)[0]


def test_non_finite_metrics_are_never_selected_nor_gated_in() -> None:
    nan, inf = float("nan"), float("inf")
    variants = [
        _v("nan", fidelity=nan, latency_p50_ms=1, size_mb=1),  # NaN < 0.98 is False: no bound catches it
        _v("inf", fidelity=0.99, latency_p50_ms=inf, size_mb=1),
        _v("ok", fidelity=0.99, latency_p50_ms=5, size_mb=5),
    ]
    chosen, rejected, _ = select(variants, SPEC)
    assert chosen == ["ok"]
    assert rejected["nan"] == "fidelity is not finite" and rejected["inf"] == "latency_p50_ms is not finite"
    assert gate(variants[0]["metrics"], None, SPEC) == (False, "candidate: fidelity is not finite")
    moved, why = gate(variants[2]["metrics"], {"size_mb": nan}, SelectSpec(objectives=["size_mb"]))
    assert not moved and "not finite" in why


def _timed(rng: np.random.Generator, weather: np.ndarray, typical_ms: float) -> list[float]:
    """Interleaved samples: the machine's weather at each sample, times the graph's own speed."""
    return list(typical_ms * weather * rng.lognormal(0, 0.03, size=len(weather)))


def test_paired_ratio_tells_speed_from_noise() -> None:
    rng = np.random.default_rng(0)
    weather = rng.uniform(0.7, 1.5, size=30)
    base = list(10 * weather)
    assert paired_ratio([0.7 * x for x in base], base, 0.05).verdict == -1
    assert paired_ratio([1.4 * x for x in base], base, 0.05).verdict == 1
    same = paired_ratio([0.98 * x for x in base], base, 0.05)
    assert same.verdict == 0 and str(same) == "ratio 0.98, CI [0.98, 0.98]"


def test_variants_tied_on_speed_are_ordered_by_fidelity_the_same_way_every_run() -> None:
    spec = SelectSpec.model_validate({"objectives": ["latency_p50_ms", "size_mb"], "top_k": 3})
    fidelity, size = {"fast": 0.91, "a": 0.96, "b": 0.99}, {"fast": 25.0, "a": 20.0, "b": 20.0}
    for seed in range(5):  # five runs on a noisy machine: the medians move, the verdicts do not
        rng = np.random.default_rng(seed)
        weather = np.repeat(rng.uniform(0.7, 1.5, size=3), 10)  # slow spells hit every graph alike
        samples = {k: _timed(rng, weather, ms) for k, ms in {"fast": 5.0, "a": 10.0, "b": 10.2}.items()}
        variants = [
            _v(k, fidelity=fidelity[k], latency_p50_ms=float(np.median(samples[k])), size_mb=size[k])
            for k in samples
        ]
        chosen, rejected, ties = select(variants, spec, samples)
        # fast is faster beyond the noise; a and b are one speed and one size: b has the fidelity.
        assert chosen == ["fast", "b", "a"] and rejected == {}, (seed, chosen)
        ((vid, note),) = ties.items()  # whichever of a and b had the lower median leads the tie
        assert vid in ("a", "b") and note.startswith(f"tied with {'ab'.replace(vid, '')} on latency (ratio")
    # Without the samples (and no tolerance), the lower median alone decides: noise would pick.
    plain = select(variants, spec.model_copy(update={"tolerance": 0.0}))
    assert len(plain.selected) == 2 and plain.ties == {} and "Pareto-dominated" in str(plain.rejected)


def test_a_size_difference_inside_the_tolerance_does_not_beat_fidelity() -> None:
    """The demo's case: per-tensor int8 0.4% smaller than per-channel, as fast, 4 points less faithful."""
    rng = np.random.default_rng(0)
    weather = np.repeat(rng.uniform(0.7, 1.5, size=3), 10)
    samples = {k: _timed(rng, weather, 5.8) for k in ("tensor", "channel")}
    variants = [
        _v("tensor", fidelity=0.955, latency_p50_ms=5.80, size_mb=23.0),
        _v("channel", fidelity=0.993, latency_p50_ms=5.71, size_mb=23.1),
    ]
    spec = SelectSpec.model_validate({"objectives": ["latency_p50_ms", "size_mb"]})
    assert select(variants, spec, samples).selected == ["channel", "tensor"]
    strict = spec.model_copy(update={"tolerance": 0.0})  # every byte counts: size decides
    assert select(variants, strict, samples).selected == ["tensor"]


def test_a_handful_of_timings_tells_nothing_apart() -> None:
    base = [10.0, 11.0, 9.5, 10.2, 10.8, 9.9]
    assert paired_ratio([0.5 * x for x in base], base, 0.05).verdict == 0  # 6 pairs: a tie
    assert paired_ratio([0.5 * x for x in base * 4], base * 4, 0.05).verdict == -1  # 24 pairs
