"""The publishing policy against the in-memory registry: what is registered, when the alias moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimline.pipelines.run.publish import publish
from slimline.pipelines.spec.spec import Spec
from slimline.registry.memory import InMemoryRegistry

SPEC = Spec.model_validate(
    {
        "version": 1,
        "name": "m",
        "model": {"source": "x"},
        "select": {"constraints": {"fidelity": {"min": 0.9}}, "objectives": ["latency_p50_ms"]},
        "registry": {"model_name": "m-compressed"},
    }
)


def _manifest(run_id: str, **variants: tuple[float, float]) -> dict:
    """A run whose selected variants are `variants` ({id: (latency, fidelity)}), best first."""
    rows = [
        {
            "id": vid,
            "status": "succeeded",
            "metrics": {"latency_p50_ms": lat, "fidelity": fid},
            "onnx": f"{vid}.onnx",
        }
        for vid, (lat, fid) in variants.items()
    ]
    return {"run_id": run_id, "status": "succeeded", "variants": rows, "selected": list(variants)}


@pytest.fixture()
def registry() -> InMemoryRegistry:
    return InMemoryRegistry()


def test_first_run_registers_its_selection_and_takes_the_alias(registry, tmp_path: Path) -> None:
    m = publish(registry, _manifest("r1", a=(10.0, 0.95), b=(12.0, 0.99)), SPEC, tmp_path)
    assert [(r["version"], r["variant"], r["aliases"]) for r in m["registered"]] == [
        ("1", "a", ["champion"]),
        ("2", "b", []),
    ]
    assert m["gate"]["moved"] and m["gate"]["reason"] == "no current champion"
    assert (tmp_path / "manifest.json").is_file() and registry.runs["r1"]["gate"] == m["gate"]
    assert m["registry"].startswith("memory")


def test_republishing_adds_no_version_and_keeps_the_alias(registry, tmp_path: Path) -> None:
    publish(registry, _manifest("r1", a=(10.0, 0.95)), SPEC, tmp_path)
    again = publish(registry, _manifest("r1", a=(10.0, 0.95)), SPEC, tmp_path)
    assert [r["version"] for r in again["registered"]] == ["1"]
    assert not again["gate"]["moved"] and "already champion" in again["gate"]["reason"]
    assert len(registry.models["m-compressed"].versions) == 1


def _with_champion(m: dict, version: str, variant: str, ratio: list[float] | None) -> dict:
    """The manifest of a run that measured the champion (10 ms, fidelity 0.95) beside its pick."""
    metrics = {"latency_p50_ms": 10.0, "fidelity": 0.95}
    ratios = {m["selected"][0]: ratio} if ratio else {}
    return {**m, "champion": {"version": version, "variant": variant, "metrics": metrics, "ratios": ratios}}


def test_the_alias_moves_only_to_a_better_model_measured_in_the_same_run(registry, tmp_path: Path) -> None:
    publish(registry, _manifest("r1", a=(10.0, 0.95)), SPEC, tmp_path)
    slower = publish(
        registry, _with_champion(_manifest("r2", b=(11.0, 0.99)), "1", "a", [1.1, 1.05, 1.15]), SPEC, tmp_path
    )
    assert slower["registered"][0]["version"] == "2" and slower["registered"][0]["aliases"] == []
    assert not slower["gate"]["moved"] and "does not beat" in slower["gate"]["reason"]
    assert registry.alias_holder("m-compressed", "champion").variant == "a"
    off_limits = publish(registry, _manifest("r3", c=(5.0, 0.5)), SPEC, tmp_path)
    assert not off_limits["gate"]["moved"] and "fidelity 0.5 < min 0.9" in off_limits["gate"]["reason"]
    unmeasured = publish(registry, _manifest("r4", d=(9.0, 0.93)), SPEC, tmp_path)
    assert not unmeasured["gate"]["moved"] and "not measured in this run" in unmeasured["gate"]["reason"]
    faster = publish(
        registry, _with_champion(_manifest("r5", d=(9.0, 0.93)), "1", "a", [0.85, 0.8, 0.9]), SPEC, tmp_path
    )
    assert (
        faster["gate"]["moved"]
        and faster["gate"]["previous"] == "1"
        and faster["gate"]["ratio"] == [0.85, 0.8, 0.9]
    )
    assert registry.alias_holder("m-compressed", "champion").variant == "d"


def test_nothing_selected_registers_nothing(registry, tmp_path: Path) -> None:
    m = _manifest("r1", a=(10.0, 0.95))
    m["selected"] = []
    out = publish(registry, m, SPEC, tmp_path)
    assert out["registered"] == [] and "nothing registered" in out["gate"]["reason"]
    assert registry.models == {}
