"""A row's kernel efficiency: achieved G operations/s at the timed shape against the CPU's peak."""

from __future__ import annotations

import pytest

from slimline.pipelines.run.rows import _efficiency


def test_gops_at_the_timed_shape_and_the_share_of_peak() -> None:
    export = {"flops_terms": [1_000_000, 2_000]}  # per token, per token pair
    lat = {"shape": [4, 64], "peak_gops": 100.0, "latency_p50_ms": 8.0}
    ops = 4 * (1_000_000 * 64 + 2_000 * 64**2)
    eff = _efficiency(export, lat)
    assert eff["gops"] == pytest.approx(ops / 8e-3 / 1e9)
    assert eff["peak_fraction"] == pytest.approx(eff["gops"] / 100.0)
    # An export made before the terms were kept counts at length 128 only; timed off the CPU
    # (no peak), no efficiency at all.
    assert _efficiency({"flops": 1}, lat) == {} and _efficiency(export, {"latency_p50_ms": 8.0}) == {}
    at_128 = _efficiency({"flops": 5e9}, lat | {"shape": [2, 128]})
    assert at_128["gops"] == pytest.approx(2 * 5e9 / 8e-3 / 1e9)
