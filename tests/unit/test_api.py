"""The Python API (slimline.api) and its factory tables (slimline.adapters): the CLI's contract."""

from __future__ import annotations

from importlib.metadata import EntryPoint, version
from pathlib import Path
from typing import Any

import pytest
import yaml

import slimline
from slimline import adapters, api
from slimline.pipelines.examples import python_api
from slimline.pipelines.run.local import LocalExecutor
from slimline.registry.memory import InMemoryRegistry


def _spec(tiny_model: Any, tiny_spec: Any, tmp_path: Path) -> dict:
    return tiny_spec(tiny_model("bert"), "feature-extraction", tmp_path / "artifacts")


def test_the_package_exposes_the_api() -> None:
    assert slimline.__version__ == version("slimline")
    assert slimline.run is api.run and slimline.load is api.load and slimline.SpecError is api.SpecError
    with pytest.raises(AttributeError):
        slimline.nothing_here  # noqa: B018


def test_validate_takes_a_path_a_dict_or_a_spec(tiny_model, tiny_spec, tmp_path: Path) -> None:
    data = _spec(tiny_model, tiny_spec, tmp_path)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    from_path, from_dict = slimline.validate(path), slimline.validate(data)
    assert from_path == from_dict and slimline.validate(from_dict) is from_dict
    assert slimline.plan(from_dict).baseline == slimline.plan(path).baseline


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        ({"select": {"objectives": ["fidelty"]}}, "<spec>: select.objectives"),
        ({"variants": {"quantization": [{"method": "dynamic-int8", "per_chanel": True}]}}, "per_chanel"),
        ({"search": {"space": {"pruning": [{"method": "hedas"}]}}}, "<spec>: search.space.pruning[0].method"),
    ],
)  # fmt: skip
def test_bad_specs_raise_the_clis_one_line_errors(tiny_model, tiny_spec, tmp_path, edit, says) -> None:
    with pytest.raises(slimline.SpecError) as err:
        slimline.validate({**_spec(tiny_model, tiny_spec, tmp_path), **edit})
    assert says in str(err.value) and "\n" not in str(err.value)


def test_registries_and_executors_are_picked_by_name_or_given(tiny_model, tiny_spec, tmp_path) -> None:
    spec = slimline.validate(_spec(tiny_model, tiny_spec, tmp_path))
    assert isinstance(adapters.registry_for("none", spec), InMemoryRegistry)
    mine = InMemoryRegistry()
    assert adapters.registry_for(mine, spec) is mine
    with adapters.executor_for("local", spec) as ex:
        assert isinstance(ex, LocalExecutor)
    with pytest.raises(slimline.FatalInputError, match="unknown registry 'nope'; known: mlflow, none"):
        adapters.registry_for("nope", spec)


class _ToyExecutor(LocalExecutor):
    """A plug-in executor: the local one under another name."""


def _toy_factory(spec: Any, *, address: str | None = None, debug: bool = False) -> Any:
    import contextlib

    return contextlib.nullcontext(_ToyExecutor())


def test_plug_ins_come_from_entry_points_and_never_replace_a_built_in(
    tiny_model, tiny_spec, tmp_path, monkeypatch
) -> None:
    here = f"{__name__}:_toy_factory"
    eps = [
        EntryPoint("toy", here, "slimline.executors"),
        EntryPoint("local", here, "slimline.executors"),
    ]
    monkeypatch.setattr(adapters, "entry_points", lambda group: [e for e in eps if e.group == group])
    spec = slimline.validate(_spec(tiny_model, tiny_spec, tmp_path))
    with adapters.executor_for("toy", spec) as ex:
        assert type(ex) is _ToyExecutor
    with adapters.executor_for("local", spec) as ex:
        assert type(ex) is LocalExecutor
    assert sorted(adapters.table(adapters.EXECUTORS, "slimline.executors")) == ["local", "ray", "toy"]


def test_the_example_script_validates_and_plans(tiny_model, tiny_spec, tmp_path, capsys) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_spec(tiny_model, tiny_spec, tmp_path)))
    assert python_api.main([str(path), "--plan-only"]) == 0
    assert f"slimline {slimline.__version__}: " in capsys.readouterr().out
    path.write_text("version: 1\nname: x\n")
    assert python_api.main([str(path), "--plan-only"]) == 2
