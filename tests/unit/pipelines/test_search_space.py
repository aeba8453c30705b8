"""The search block: validation with one clear line, the space as dimensions, points as configs, scores."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slimline.api import validate
from slimline.pipelines.errors import SpecError
from slimline.pipelines.plan.plan import build_plan
from slimline.pipelines.plan.space import check_space, decode, dimensions, grid_points
from slimline.pipelines.run.search import INFEASIBLE, SearchLog, at_rung, rungs_of, sampled_points, score
from slimline.pipelines.spec.search import Rung
from slimline.pipelines.spec.spec import SelectSpec, Spec

SPACE = {
    "pruning": [
        "none",
        {
            "method": "structured",
            "heads": {"min": 0.0, "max": 0.5},
            "ffn": {"min": 0.0, "max": 0.6, "step": 0.3},
        },
    ],
    "quantization": ["none", {"method": "dynamic-int8", "per_channel": [False, True]}],
    "distillation": {"steps": {"max": 40}, "lr": [1e-4, 1e-3]},
}


NAN = float("nan")
FINE = {"method": "heads", "amount": {"min": 0.1, "max": 0.5, "step": 1e-9}}
_R = {"min": 0.1, "max": 0.9, "step": 0.001}
FINE3 = {"method": "structured", "heads": _R, "ffn": _R, "layers": _R}


def _spec(tmp_path: Path, **search: object) -> Spec:
    data = {
        "version": 1,
        "name": "s",
        "model": {"source": str(tmp_path), "task": "feature-extraction"},
        "search": {"strategy": "asha", "trials": 4, "space": SPACE} | search,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return validate(path)  # the space too: the spec alone does not decode it


def test_space_flattens_to_named_dimensions(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    dims = {d.name: d for d in dimensions(spec.search.space)}
    assert set(dims) == {
        "pruning",
        "pruning.1.heads",
        "pruning.1.ffn",
        "quantization",
        "quantization.1.per_channel",
        "distillation.lr",
    }  # steps {max: 40} is the budget, not a dimension
    assert dims["pruning.1.heads"].kind == "float" and dims["pruning.1.ffn"].grid() == [0.0, 0.3, 0.6]
    assert dims["quantization"].grid() == [0, 1]


def test_a_point_decodes_to_validated_configs(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    point = {
        "pruning": 1,
        "pruning.1.heads": 0.25,
        "pruning.1.ffn": 0.0,
        "quantization": 1,
        "quantization.1.per_channel": 1,
        "distillation.lr": 1,
    }
    combo = decode(spec, point)
    # ffn 0 means "no FFN cut": structured gets heads only, and distillation is on for it.
    assert combo.pruning.method == "structured" and combo.pruning.heads == 0.25 and combo.pruning.ffn is None
    assert combo.quantization.per_channel is True
    assert combo.distillation.steps == 40 and combo.distillation.lr == 1e-3
    # Every cut at zero is no pruning at all, and then nothing to distil.
    none = decode(spec, point | {"pruning.1.heads": 0.0})
    assert none.pruning is None and none.distillation is None


def test_grid_needs_steps_and_covers_every_point(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError, match=r"search.space.pruning.1.heads: a grid needs a list or a range with a step"
    ):
        _spec(tmp_path, strategy="grid")
    space = SPACE | {"pruning": ["none", {"method": "heads", "amount": [0.25, 0.5]}]}
    spec = _spec(tmp_path, strategy="grid", space=space)
    points = grid_points(check_space(spec))
    assert len(points) == 2 * 2 * 2 * 2 * 2  # pruning × amount × quantization × per_channel × lr


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"strategy": "bayes"}, "search.strategy"),
        ({"strategy": None, "sampler": "bayes"}, "search.sampler"),
        ({"strategy": "grid", "sampler": "tpe"}, "strategy 'grid' means sampler: grid"),
        ({"rungs": [{"eval_samples": 32}, {"eval_samples": 16, "distill_fraction": 1.0}]}, "last rung"),
        ({"rungs": [{"eval_samples": 64}, {"eval_samples": 32}, {}]}, "must not decrease"),
        ({"space": {"pruning": [{"method": "heads", "amount": {"min": 0.6, "max": 0.2}}]}}, "min < max"),
        ({"space": {"pruning": [{"method": "hedas"}]}}, r"search.space.pruning\[0\].method"),
        (
            {"space": {"pruning": [{"method": "heads", "amount": {"min": 0.1, "max": 1.5}}]}},
            "search.space.pruning",
        ),
        # issue 25: each of these validated, then crashed at run time or in validate
        ({"space": {}}, "nothing to search"),
        ({"space": {"pruning": ["none"], "quantization": "none"}}, "nothing to search"),
        ({"seed": -5}, "search.seed"),
        ({"seed": 1e23}, "search.seed"),
        (
            {"space": {"pruning": [{"method": "heads", "amount": {"min": 0.1, "max": 0.5, "step": NAN}}]}},
            "step",
        ),
        (
            {"space": {"pruning": [{"method": "heads", "amount": {"min": 0.1, "max": 0.5, "log": "no"}}]}},
            "log",
        ),
        ({"strategy": "grid", "space": {"pruning": [FINE]}}, "wider step"),
        ({"strategy": "grid", "space": {"pruning": [FINE3]}}, "more than 100,000 points"),
        ({"budget": {"time_s": 1e-9}}, "search.budget.time_s"),
        (
            {"space": SPACE | {"distillation": {"lr": {"min": -1.0, "max": 1.0}}}},
            "search.space.distillation.lr",
        ),
    ],
)
def test_bad_search_blocks_get_one_line_naming_the_field(tmp_path: Path, search: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message) as err:
        _spec(tmp_path, **search)
    assert "\n" not in str(err.value) and "spec.yaml" in str(err.value)


def test_rungs_stop_distillation_on_the_full_schedule(tmp_path: Path) -> None:
    spec = _spec(tmp_path, rungs=[{"eval_samples": 16, "distill_fraction": 0.25}, {}])
    combo = decode(
        spec,
        {
            "pruning": 1,
            "pruning.1.heads": 0.5,
            "pruning.1.ffn": 0.3,
            "quantization": 0,
            "quantization.1.per_channel": 0,
            "distillation.lr": 0,
        },
    )
    low = at_rung(combo, spec.search.rungs[0])
    assert low.distillation.stop_after == 10 and low.distillation.steps == 40
    assert at_rung(combo, spec.search.rungs[1]) == combo
    assert rungs_of(spec) == (0, 1)
    fifo = spec.search.model_copy(update={"sampler": "tpe", "scheduler": "fifo"})
    assert rungs_of(spec.model_copy(update={"search": fifo})) == (1,)
    # The full distillation may resume from the quarter-way stage: its id is a resume candidate.
    plan = build_plan(spec, "d", train_digest="t", combos=[combo], resume_fractions=(0.25, 1.0))
    partial = build_plan(spec, "d", train_digest="t", combos=[low])
    (full_kd,) = [s for s in plan.stages.values() if s.kind == "distill"]
    (low_kd,) = [s for s in partial.stages.values() if s.kind == "distill"]
    assert full_kd.resume == [low_kd.id] and low_kd.id != full_kd.id


def test_score_ranks_feasible_above_infeasible_by_how_far_they_miss() -> None:
    select = SelectSpec.model_validate(
        {"constraints": {"fidelity": {"min": 0.9}}, "objectives": ["latency_p50_ms"]}
    )
    fast = score({"fidelity": 0.95, "latency_p50_ms": 1.0, "speedup_vs_baseline": 2.0}, select)
    slow = score({"fidelity": 0.99, "latency_p50_ms": 2.0, "speedup_vs_baseline": 1.1}, select)
    near = score({"fidelity": 0.85, "latency_p50_ms": 1.0, "speedup_vs_baseline": 3.0}, select)
    far = score({"fidelity": 0.5, "latency_p50_ms": 1.0, "speedup_vs_baseline": 3.0}, select)
    assert fast == (2.0, []) and slow[0] == 1.1
    assert near[0] < INFEASIBLE + 1 and far[0] < near[0] < slow[0]
    assert near[1] == ["fidelity 0.85 < min 0.9"]
    size = SelectSpec.model_validate({"constraints": {}, "objectives": ["size_mb"]})
    assert score({"size_mb": 10.0}, size)[0] > score({"size_mb": 20.0}, size)[0]


def test_search_log_tells_finished_stopped_and_failed_trials(tmp_path: Path) -> None:
    spec = _spec(tmp_path, rungs=[{"eval_samples": 16, "distill_fraction": 0.5}, {}])
    log = SearchLog(spec)
    point = {
        "pruning": 0,
        "pruning.1.heads": 0.1,
        "pruning.1.ffn": 0.0,
        "quantization": 1,
        "quantization.1.per_channel": 0,
        "distillation.lr": 0,
    }
    for r in (0, 1):
        log.result("a", point, {"rung": r, "score": 1.5 + r, "feasible": True, "label": "a"})
    log.result("b", point, {"rung": 0, "score": -1e6, "feasible": False, "label": "b"})
    log.ended("a", "done")
    log.ended("b", "done")
    log.ended("c", "error")
    assert [e["status"] for e in log.trials.values()] == ["finished", "stopped", "error"]
    assert log.trials["b"]["stopped_at_rung"] == 0
    assert [b["score"] for b in log.best] == [2.5]  # only full-fidelity results count as found
    assert len(log.finalists()) == 1 and log.finalists()[0].quantization.method == "dynamic-int8"


def test_rung_validation() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        Rung(eval_samples=4)


def test_the_packaged_search_example_is_valid() -> None:
    from importlib import resources

    path = resources.files("slimline.pipelines.examples").joinpath("minilm-search.yaml")
    spec = validate(Path(str(path)))
    names = {d.name for d in check_space(spec)}
    assert spec.search.multi_fidelity and {"pruning.1.heads", "quantization.2.exclude.auto"} <= names
    assert spec.search.space.distillation == {"steps": {"max": 200}}


def test_random_and_asha_sample_distinct_candidates_of_a_finite_space(tmp_path: Path) -> None:
    space = SPACE | {"pruning": ["none", {"method": "heads", "amount": [0.25, 0.5]}]}
    spec = _spec(tmp_path, strategy="asha", space=space)
    dims = check_space(spec)
    points = sampled_points(spec, dims, 100, seed=0)
    combos = [decode(spec, p) for p in points]
    # 2 head prunings × 3 quantizations × 2 lrs, plus 3 unpruned quantizations (nothing to
    # distil, so lr makes no recipe), less the baseline (no pruning, no quantization): 14, once each.
    assert len(combos) == len(set(map(repr, combos))) == 14
    assert all(c.pruning is not None or c.quantization is not None for c in combos)
    assert (
        sampled_points(spec, dims, 4, seed=0)
        == sampled_points(spec, dims, 4, seed=0)
        != sampled_points(spec, dims, 4, seed=1)
    )
    assert sampled_points(_spec(tmp_path), check_space(_spec(tmp_path)), 4, seed=0) is None  # a float range


@pytest.mark.parametrize(
    ("search", "pair", "label"),
    [
        ({}, ("random", "asha"), "asha"),
        ({"strategy": "grid", "space": {"quantization": ["none", "dynamic-int8"]}}, ("grid", "fifo"), "grid"),
        ({"strategy": "tpe"}, ("tpe", "fifo"), "tpe"),
        ({"strategy": None, "sampler": "tpe", "scheduler": "asha"}, ("tpe", "asha"), "tpe+asha"),
        ({"strategy": None, "sampler": "random", "scheduler": "fifo"}, ("random", "fifo"), "random"),
    ],
)
def test_strategy_is_an_alias_of_a_sampler_and_a_scheduler(
    tmp_path: Path, search: dict, pair: tuple[str, str], label: str
) -> None:
    spec = _spec(tmp_path, **{k: v for k, v in search.items()})
    assert (spec.search.sampler, spec.search.scheduler) == pair and spec.search.label == label
    assert spec.search.multi_fidelity is False  # one rung: nothing to stop early at


# Property test (issue 25): generated search blocks, hostile numbers included, get exit 0 or 2
# from `validate`, and `plan` of a valid one never raises either.
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NUMBER = st.one_of(
    st.integers(-10, 2**34),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1e-9, 0.001, 0.25, 0.5, 1.5, 1e23]),
)
ODD = st.one_of(NUMBER, st.booleans(), st.sampled_from(["no", "yes", "", "all"]), st.none())
FRACTION = st.floats(0.0, 0.9)
RANGE = st.one_of(
    st.dictionaries(st.sampled_from(["min", "max", "step", "log"]), ODD, min_size=1, max_size=4),
    st.builds(  # well-formed ends, then a step and a log flag that may not be
        lambda a, b, extra: {"min": min(a, b), "max": max(a, b) + 0.05, **extra},
        FRACTION,
        FRACTION,
        st.fixed_dictionaries({}, optional={"step": ODD, "log": ODD}),
    ),
)
VALUE = st.one_of(ODD, RANGE, st.lists(ODD, max_size=3))
PRUNING = st.one_of(
    st.just("none"),
    st.fixed_dictionaries({"method": st.just("heads"), "amount": VALUE}),
    st.fixed_dictionaries({"method": st.just("structured"), "heads": VALUE, "ffn": VALUE}),
)
QUANTIZATION = st.one_of(
    st.just("none"), st.fixed_dictionaries({"method": st.just("dynamic-int8"), "per_channel": VALUE})
)
SPACE_ST = st.fixed_dictionaries(
    {},
    optional={
        "pruning": st.lists(PRUNING, max_size=3),
        "quantization": st.lists(QUANTIZATION, max_size=3),
        "distillation": st.dictionaries(st.sampled_from(["lr", "steps", "batch_size"]), VALUE, max_size=2),
    },
)
SEARCH_ST = st.fixed_dictionaries(
    {"space": SPACE_ST},
    optional={
        "strategy": st.sampled_from(["grid", "random", "tpe", "asha", "bayes"]),
        "trials": NUMBER,
        "seed": ODD,
        "budget": st.dictionaries(st.just("time_s"), ODD),
        "rungs": st.lists(
            st.fixed_dictionaries({}, optional={"eval_samples": ODD, "distill_fraction": ODD}), max_size=3
        ),
    },
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(search=SEARCH_ST)
def test_any_search_block_validates_or_gets_one_line(cli, tiny_model, tmp_path: Path, search: dict) -> None:
    data = {
        "version": 1,
        "name": "s",
        "model": {"source": str(tiny_model("bert")), "task": "feature-extraction"},
        "search": search,
        "artifacts": {"path": str(tmp_path / "art")},
    }
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump(data))
    checked = cli("validate", str(path))  # in-process: a traceback fails the test
    assert checked.returncode in (0, 2), checked.stderr
    if checked.returncode == 2:
        assert len(checked.stderr.strip().splitlines()) == 1, checked.stderr
        return
    planned = cli("plan", str(path))
    assert planned.returncode in (0, 2), planned.stderr


def test_validate_describes_a_search(tmp_path: Path, cli) -> None:
    """issue 26: it said `valid (1 pruning x 1 quantization settings)` of a search spec."""
    _spec(tmp_path)  # writes spec.yaml: asha over SPACE
    out = cli("validate", str(tmp_path / "spec.yaml"))
    assert out.returncode == 0 and "pruning x" not in out.stdout
    assert "search asha: random sampler, asha scheduler, 4 trials over 6 dimensions, 1 rung)" in out.stdout
