"""The int8 micro-benchmark behind `slimline doctor`: real ORT sessions, a verdict that follows the ratio."""

from __future__ import annotations

from slimline.tasks.cpu_probe import Int8Probe, probe_int8


def test_the_probe_times_both_graphs_and_says_what_it_means() -> None:
    p = probe_int8(seconds=1.0, flags="avx2")
    assert p.fp32_ms > 0 and p.int8_ms > 0 and p.speedup == p.fp32_ms / p.int8_ms
    assert f"x{p.speedup:.1f}" in p.verdict()


def test_verdicts() -> None:
    assert Int8Probe(2.4, 1.0, "avx2 avx512_vnni").verdict() == "int8 pays off here (x2.4)"
    assert (
        Int8Probe(1.5, 1.0, "avx2").verdict()
        == "int8 helps a little here (x1.5): no VNNI (8-bit dot products)"
    )
    assert Int8Probe(1.1, 1.0, "avx2").verdict().startswith("int8 gives little here (x1.1): no VNNI")
    assert Int8Probe(1.1, 1.0, "avx_vnni").verdict() == "int8 gives little here (x1.1)"


def test_peak_follows_the_flags_and_the_clock(monkeypatch) -> None:
    from slimline.tasks import cpu_probe

    info = {"cpu MHz": "2500.0", "model name": "x"}
    monkeypatch.setattr(cpu_probe, "_cpuinfo", lambda key: info.get(key, "avx2 fma"))
    # 2 cores x 2 FMA units x 8 fp32 lanes x 2 operations x 2.5 GHz; int8 without VNNI: twice that.
    assert cpu_probe.peak_gops(2) == 2 * 2 * 8 * 2 * 2.5 == 160.0
    assert cpu_probe.peak_gops(2, int8=True) == 320.0
    monkeypatch.setattr(cpu_probe, "_cpuinfo", lambda key: info.get(key, "avx2 fma avx512f avx512_vnni"))
    assert cpu_probe.peak_gops(1) == 1 * 2 * 16 * 2 * 2.5 and cpu_probe.peak_gops(1, int8=True) == 4 * 160.0
