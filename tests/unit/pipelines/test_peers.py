"""The pick against the peers' one-line recipes: which peer is best, the paired verdict, the line
the report starts with, the spec's `baselines:` and `select.beat_peers` at publishing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slimline.pipelines.errors import SpecError
from slimline.pipelines.run.peers import compare_peers, lost_to_a_peer, outcome_line
from slimline.pipelines.run.publish import publish
from slimline.pipelines.spec.spec import BASELINES, SelectSpec, Spec, parse_spec
from slimline.registry.memory import InMemoryRegistry

SELECT = SelectSpec(constraints={"fidelity": {"min": 0.9}}, objectives=["latency_p50_ms"])


def _row(vid: str, ms: float, fidelity: float, peer: str | None = None) -> dict[str, Any]:
    row = {"id": vid, "status": "succeeded", "metrics": {"latency_p50_ms": ms, "fidelity": fidelity}}
    return {**row, "peer": peer, "onnx": f"{vid}.onnx"} if peer else {**row, "onnx": f"{vid}.onnx"}


def _samples(ms: float, n: int = 30, seed: int = 0) -> list[float]:
    return list(ms * (1 + 0.01 * np.random.default_rng(seed).standard_normal(n)))


def test_the_best_peer_is_the_fastest_that_meets_the_constraints() -> None:
    rows = [
        _row("pick", 10.0, 0.99),
        _row("fast", 8.0, 0.85, peer="ort-default"),  # fastest, but fails fidelity >= 0.9
        _row("ok", 13.0, 0.98, peer="optimum-avx2"),
    ]
    samples = {"pick": _samples(10.0), "fast": _samples(8.0, seed=1), "ok": _samples(13.0, seed=2)}
    got = compare_peers(rows, ["pick"], samples, SELECT)
    assert got is not None and got["best"] == "optimum-avx2" and got["best_fits"]
    assert got["verdict"] == "pick faster" and got["speedup"] == pytest.approx(1.3, rel=0.03)
    assert got["ci"][0] <= got["speedup"] <= got["ci"][1] and got["fidelity_delta"] == pytest.approx(0.01)
    line = outcome_line(got)
    assert line is not None and line.startswith("pick vs best peer (optimum-avx2): 1.3") and "+0.0100" in line
    assert not lost_to_a_peer(got)


def test_a_peer_that_wins_is_said_plainly_and_a_tie_is_a_tie() -> None:
    rows = [_row("pick", 10.0, 0.99), _row("p", 8.0, 0.95, peer="ort-default")]
    won = compare_peers(rows, ["pick"], {"pick": _samples(10.0), "p": _samples(8.0, seed=1)}, SELECT)
    assert won is not None and won["verdict"] == "peer faster" and lost_to_a_peer(won)
    assert outcome_line(won).startswith("a peer won: ort-default is 1.2")
    tied = compare_peers(rows, ["pick"], {"pick": _samples(10.0), "p": _samples(10.1, seed=1)}, SELECT)
    assert tied is not None and tied["verdict"] == "tied" and "tied within the noise" in outcome_line(tied)
    none = compare_peers(rows, [], {"pick": _samples(10.0), "p": _samples(8.0)}, SELECT)
    assert none is not None and outcome_line(none) == "nothing selected; the best peer is ort-default"
    assert compare_peers([_row("pick", 10.0, 0.99)], ["pick"], {"pick": _samples(10.0)}, SELECT) is None


def test_a_pick_that_is_the_peers_own_graph_is_said_to_be_so() -> None:
    """The latency stage times byte-identical graphs once: the pick then cannot 'beat' its twin."""
    same = _samples(10.0)
    rows = [{**_row("pick", 10.0, 0.96), "same_graph_as": "p"}, _row("p", 10.0, 0.96, peer="ort-default")]
    got = compare_peers(rows, ["pick"], {"pick": same, "p": same}, SELECT)
    assert got is not None and got["same_graph"] and got["verdict"] == "tied" and got["ci"] == [1.0, 1.0]
    said = "pick vs best peer (ort-default): the same graph, byte for byte (the pick is that recipe)"
    assert outcome_line(got) == said
    other = compare_peers([_row("pick", 10.0, 0.96), rows[1]], ["pick"], {"pick": same, "p": same}, SELECT)
    assert other is not None and not other["same_graph"]


def _spec(**extra: Any) -> Spec:
    return Spec.model_validate({"version": 1, "name": "m", "model": {"source": "x"}, **extra})


def test_baselines_default_by_task_resolve_auto_by_cpu_and_refuse_unknown_names() -> None:
    encoder = [c.to_json()["recipe"] for c in _spec().peer_configs("fma avx2")]
    assert encoder == ["ort-default", "optimum-avx2"]
    vnni = _spec().peer_configs("avx2 avx512f avx512_vnni")
    assert [c.to_json()["recipe"] for c in vnni] == ["ort-default", "optimum-avx512_vnni"]
    assert _spec(model={"source": "x", "task": "causal-lm"}).peer_configs("fma avx2") == []
    assert _spec(baselines=[]).peer_configs("fma avx2") == []
    with pytest.raises(SpecError) as exc:
        parse_spec(
            {"version": 1, "name": "m", "model": {"source": "x"}, "baselines": ["optimum-avx9"]}, "s.yaml"
        )
    line = str(exc.value)
    assert "baselines" in line and all(name in line for name in BASELINES) and "\n" not in line
    # A spec that does not mention the new keys keeps its digest.
    assert _spec().digest() == _spec(baselines=None, select={"beat_peers": False}).digest()
    assert _spec().digest() != _spec(baselines=["ort-default"]).digest()


def test_beat_peers_registers_nothing_when_a_peer_won(tmp_path: Path) -> None:
    rows = [_row("pick", 10.0, 0.99), _row("p", 8.0, 0.95, peer="ort-default")]
    lost = compare_peers(rows, ["pick"], {"pick": _samples(10.0), "p": _samples(8.0, seed=1)}, SELECT)
    select = {"constraints": {"fidelity": {"min": 0.9}}, "objectives": ["latency_p50_ms"], "beat_peers": True}
    spec = _spec(select=select, registry={"model_name": "m"})

    def manifest(run_id: str, peers: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "status": "succeeded",
            "variants": rows,
            "selected": ["pick"],
            "peers": peers,
        }

    registry = InMemoryRegistry()
    m = publish(registry, manifest("r1", lost), spec, tmp_path)
    assert m["registered"] == [] and not m["gate"]["moved"]
    assert m["gate"]["reason"].startswith("nothing registered (select.beat_peers): a peer won")
    won = compare_peers(rows, ["pick"], {"pick": _samples(8.0), "p": _samples(10.0, seed=1)}, SELECT)
    m = publish(registry, manifest("r2", won), spec, tmp_path)
    assert [r["variant"] for r in m["registered"]] == ["pick"] and m["gate"]["moved"], m["gate"]["reason"]
