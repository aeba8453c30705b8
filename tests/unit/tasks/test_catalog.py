"""The technique catalog: discovery, plug-ins, capabilities as data, JSON round trips, clear errors."""

from __future__ import annotations

import importlib
import json
import pkgutil
import types
from typing import ClassVar, Literal

import pytest
from pydantic import ValidationError

from slimline.tasks import catalog
from slimline.tasks.base import TASKS, Record, StepConfig, TechniqueConfig
from slimline.tasks.evaluate import LatencyConfig
from slimline.tasks.export import ExportConfig
from slimline.tasks.load import LoadConfig
from slimline.tasks.optimize import OptimizeConfig
from slimline.tasks.profile import ProfileConfig
from slimline.tasks.techniques import register_technique

PACKAGE = {"prune": "pruning", "distill": "distillation", "quantize": "quantization"}
STEPS: list[StepConfig] = [
    LoadConfig(source="x"),
    ExportConfig(),
    OptimizeConfig(),
    ProfileConfig(),
    LatencyConfig(),
]


def _builtin_modules() -> list[str]:
    names = []
    for pkg_name in catalog.PACKAGES:
        pkg = importlib.import_module(f"slimline.tasks.{pkg_name}")
        names += [f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if m.name[0] != "_"]
    return names


def test_every_technique_module_is_discovered_with_its_stage() -> None:
    found = catalog.techniques()
    modules = _builtin_modules()
    assert sorted(t.apply.__module__ for t in found.values()) == sorted(modules)  # one technique each
    for name, t in found.items():
        assert issubclass(t.config, TechniqueConfig) and t.config.model_fields["method"].default == name
        assert t.config.__module__.startswith(f"slimline.tasks.{PACKAGE[t.config.stage]}.")
        assert t.doc and t.doc == t.config.__doc__.strip().splitlines()[0]
        assert catalog.techniques(t.config.stage)[name] is t


def test_capabilities_are_data_on_the_config_class() -> None:
    for t in catalog.techniques().values():
        c = t.config
        assert c.needs_gpu is None or isinstance(c.needs_gpu, str)
        assert c.list_fields <= set(c.model_fields) and c.tasks <= set(TASKS)
        assert set(c.example) <= set(c.model_fields)
        assert c.resumable == (t.resume is not None)
    t = catalog.techniques()
    assert t["heads"].config.changes_shapes and not t["magnitude"].config.changes_shapes
    assert t["fp16"].config.needs_gpu and "op_types" in t["static-int8"].config.list_fields
    assert t["distill"].config.resumable and not t["heads"].config.resumable


@pytest.mark.parametrize("name", sorted(catalog.techniques()))
def test_every_technique_config_round_trips_through_json(name: str) -> None:
    """Each technique's default config (plus its `example` settings, where a field is required)."""
    config = catalog.config_class(name)
    cfg = config.model_validate({"method": name, **config.example})
    again = catalog.make_config(json.loads(json.dumps(cfg.to_json())))
    assert again == cfg and again.digest() == cfg.digest()
    assert type(again) is config and catalog.technique_of(again, config.stage).config is config
    with pytest.raises(ValidationError, match="frozen"):
        cfg.method = "other"  # type: ignore[misc]


@pytest.mark.parametrize("cfg", STEPS, ids=lambda c: type(c).__name__)
def test_every_step_config_round_trips_through_json(cfg: StepConfig) -> None:
    again = type(cfg).model_validate(json.loads(json.dumps(cfg.to_json())))
    assert again == cfg and again.digest() == cfg.digest()


def test_unknown_technique_lists_the_valid_ones() -> None:
    valid = ", ".join(catalog.techniques("quantize"))
    with pytest.raises(catalog.UnknownTechnique, match=f"valid: {valid}$"):
        catalog.make_config({"method": "int3"}, "quantize")


def test_unknown_config_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        catalog.make_config({"method": "heads", "amount": 0.5, "amout": 1})


def test_a_config_of_another_stage_or_class_is_an_error_never_a_fallback() -> None:
    heads = catalog.make_config({"method": "heads", "amount": 0.5})
    with pytest.raises(catalog.UnknownTechnique, match="not a quantize technique"):
        catalog.technique_of(heads, "quantize")

    class Lookalike(TechniqueConfig):  # the name of a technique, but not its config
        stage: ClassVar = "prune"
        method: Literal["heads"] = "heads"

    with pytest.raises(catalog.UnknownTechnique, match="Lookalike is not a prune technique"):
        catalog.technique_of(Lookalike(), "prune")


def test_a_module_without_a_registered_apply_is_refused() -> None:
    with pytest.raises(TypeError, match="register_technique"):
        catalog.register(types.ModuleType("not_a_technique"))
    plain = types.ModuleType("plain_apply")
    plain.apply = lambda cfg, model, batches=None: {}  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match=r"plain_apply: .*@register_technique"):
        catalog.register(plain)


def _plugin_module(name: str) -> types.ModuleType:
    module = types.ModuleType(f"plugin_{name.replace('-', '_')}")

    class PluginConfig(TechniqueConfig):
        """A plug-in quantization."""

        stage: ClassVar = "quantize"
        method: str = name

    @register_technique(PluginConfig)
    def apply(cfg: PluginConfig, src: object, dst: object, **_: object) -> Record:
        return {}

    module.apply = apply  # type: ignore[attr-defined]
    return module


class _EntryPoint:
    def __init__(self, name: str, loaded: object) -> None:
        self.name, self.value, self._loaded = name, f"plugins:{name}", loaded

    def load(self) -> object:
        if isinstance(self._loaded, Exception):
            raise self._loaded
        return self._loaded


def test_plugins_register_through_entry_points(monkeypatch, caplog) -> None:
    module = _plugin_module("plug-int8")
    points = [_EntryPoint("plug-int8", module), _EntryPoint("broken", ImportError("no module named x"))]
    seen: list[str] = []

    def entry_points(*, group: str) -> list[_EntryPoint]:
        seen.append(group)
        return points

    monkeypatch.setattr(catalog, "entry_points", entry_points)
    catalog._discover.cache_clear()
    try:
        table = catalog.techniques("quantize")
        assert seen == ["slimline.techniques"]
        plugin = table["plug-int8"]
        assert plugin.apply is module.apply and plugin.doc == "A plug-in quantization."
        assert "broken" in caplog.text and "no module named x" in caplog.text  # a warning, not a failure
        assert "fp16" in table  # the built-ins are all still there
    finally:
        monkeypatch.undo()
        catalog._CATALOG.pop("plug-int8", None)
        catalog._discover.cache_clear()
    assert "plug-int8" not in catalog.techniques()


def test_a_plugin_cannot_take_a_builtin_name() -> None:
    with pytest.raises(TypeError, match=r"technique 'fp16' is already slimline\.tasks\.quantization\.fp16"):
        catalog.register(_plugin_module("fp16"))
    assert catalog.techniques()["fp16"].config.__module__ == "slimline.tasks.quantization.fp16"
