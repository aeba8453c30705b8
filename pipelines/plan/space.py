"""A search space as flat dimensions, and a point of it as the technique configs it stands for.

The spec's space is technique entries whose values may be lists (a choice) or ranges
({min, max[, step][, log]}). Flattened, every choice and range is one named dimension, e.g.
`pruning` (which entry), `pruning.0.heads` (a range of that entry) or `quantization.1.exclude.auto`.
A searcher samples dimensions, never configs: choices are sampled as indices, so any value
(a dict, None) can be a choice, and Optuna sees only numbers.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from slimline.pipelines.errors import SpecError
from slimline.pipelines.plan.plan import Combo
from slimline.pipelines.spec.search import SearchSpace
from slimline.pipelines.spec.spec import Spec, _export_override, expand
from slimline.tasks.base import TechniqueConfig
from slimline.tasks.catalog import UnknownTechnique, config_class

RANGE_KEYS = {"min", "max", "step", "log"}
GRID_CAP = 100_000  # points a grid may have: counted before any is built


@dataclass(frozen=True)
class Dim:
    """One dimension: a choice among `values` (sampled as an index), or an int or float range."""

    name: str
    kind: Literal["choice", "int", "float"]
    values: list[Any] = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    def size(self) -> int | None:
        """How many values a grid visits, counted without listing them (None: a range without a step)."""
        if self.kind == "choice":
            return len(self.values)
        if self.step is None:
            return None
        return math.floor((self.high - self.low) / self.step + 1e-9) + 1

    def grid(self) -> list[Any]:
        """The values a grid visits (a choice's indices; a range needs a step)."""
        n = self.size()
        if n is None:
            raise SpecError(f"search.space.{self.name}: a grid needs a list or a range with a step")
        if n > GRID_CAP:
            raise SpecError(
                f"search.space.{self.name}.step: {n:,} values, more than {GRID_CAP:,}; expected a wider step"
            )
        if self.kind == "choice":
            return list(range(n))
        assert self.step is not None
        vals = [self.low + i * self.step for i in range(n)]
        return [round(v) for v in vals] if self.kind == "int" else [round(v, 10) for v in vals]

    def corners(self) -> list[Any]:
        """Sampled values that exercise every choice and both ends of a range (for validation)."""
        if self.kind == "choice":
            return list(range(len(self.values)))
        return [int(self.low), int(self.high)] if self.kind == "int" else [self.low, self.high]


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def is_range(value: Any) -> bool:
    """Whether a spec value is a range: a mapping of min/max (and step/log) only."""
    return isinstance(value, dict) and "max" in value and set(value) <= RANGE_KEYS


def _range(name: str, value: dict[str, Any]) -> Dim | Any:
    """A range's dimension; a range with only `max` is not searched: it is that value (a budget)."""
    if "min" not in value:
        return value["max"]
    low, high, step = value["min"], value["max"], value.get("step")
    if not all(_finite(v) for v in (low, high)) or low >= high:
        raise SpecError(f"search.space.{name}: expected min < max, both finite numbers (got {value!r})")
    if step is not None and (not _finite(step) or step <= 0):
        raise SpecError(f"search.space.{name}.step: expected a finite positive number (got {step!r})")
    integral = all(isinstance(v, int) for v in (low, high, step if step is not None else 1))
    log = value.get("log", False)
    if not isinstance(log, bool):  # YAML's "no" is a string here: never read a string as true
        raise SpecError(f"search.space.{name}.log: expected true or false (got {log!r})")
    if log and low <= 0:
        raise SpecError(f"search.space.{name}: a log range needs min > 0 (got {low!r})")
    return Dim(name, "int" if integral else "float", low=low, high=high, step=step, log=log)


def _walk(prefix: str, entry: dict[str, Any], list_fields: frozenset[str], dims: list[Dim]) -> None:
    for key, value in entry.items():
        name = f"{prefix}.{key}"
        if key == "method":
            continue
        if isinstance(value, list) and key not in list_fields:
            if not value:
                raise SpecError(f"search.space.{name}: empty list (a choice needs at least one value)")
            if len(value) > 1:
                dims.append(Dim(name, "choice", values=list(value)))
        elif is_range(value):
            dim = _range(name, value)
            if isinstance(dim, Dim):
                dims.append(dim)
        elif isinstance(value, dict) and key != "export":
            _walk(name, value, frozenset(), dims)


def _class_of(axis: str, entry: Any, where: str) -> type[TechniqueConfig] | None:
    method = entry if isinstance(entry, str) else entry.get("method") if isinstance(entry, dict) else None
    if method == "none":
        return None
    if not isinstance(method, str):
        raise SpecError(f"{where}.method: expected one technique name (got {method!r})")
    try:
        return config_class(method, "prune" if axis == "pruning" else "quantize")
    except UnknownTechnique as exc:
        raise SpecError(f"{where}.method: {exc}") from None


def dimensions(space: SearchSpace) -> list[Dim]:
    """Every searched dimension of the space, in a stable order."""
    dims: list[Dim] = []
    for axis in ("pruning", "quantization"):
        entries: list[Any] = getattr(space, axis)
        if len(entries) > 1:
            dims.append(Dim(axis, "choice", values=list(entries)))
        for i, entry in enumerate(entries):
            cls = _class_of(axis, entry, f"search.space.{axis}[{i}]")
            if cls is not None and isinstance(entry, dict):
                _walk(f"{axis}.{i}", entry, cls.list_fields, dims)
    if space.distillation is not None:
        _walk("distillation", space.distillation, frozenset(), dims)
    return dims


def _resolve(prefix: str, value: Any, point: dict[str, Any], list_fields: frozenset[str], key: str) -> Any:
    """A spec value with its dimension's sampled value put in."""
    if isinstance(value, list) and key not in list_fields:
        return value[int(point[prefix])] if len(value) > 1 else value[0]
    if is_range(value):
        if "min" not in value:
            return value["max"]
        v = point[prefix]
        # 4 decimals: nearby samples share a label and their cached stages, none of which differ
        # by a meaningful amount. A range with a step is on its grid, up to the float noise of
        # Tune's quantised samplers (0.30000000000000004), which 10 decimals remove as grid() does.
        return round(v, 10 if "step" in value else 4) if isinstance(v, float) else v
    if isinstance(value, dict) and key != "export":
        return {k: _resolve(f"{prefix}.{k}", v, point, frozenset(), k) for k, v in value.items()}
    return value


def _entry(axis: str, space: SearchSpace, point: dict[str, Any]) -> tuple[int, Any]:
    entries: list[Any] = getattr(space, axis)
    i = int(point[axis]) if len(entries) > 1 else 0
    entry = entries[i]
    if not isinstance(entry, dict):
        return i, entry
    cls = _class_of(axis, entry, f"search.space.{axis}[{i}]")
    lists = cls.list_fields if cls is not None else frozenset()
    return i, {k: _resolve(f"{axis}.{i}.{k}", v, point, lists, k) for k, v in entry.items()}


def _without_zero_cuts(entry: Any, cls: type[TechniqueConfig] | None) -> Any:
    """A sampled 0 for an optional amount (`structured`'s heads: 0) means that cut is not made."""
    if not isinstance(entry, dict) or cls is None:
        return entry
    fields = cls.model_fields
    kept = {k: v for k, v in entry.items() if not (v == 0 and k in fields and fields[k].default is None)}
    return "none" if set(kept) <= {"method", "importance", "export"} and kept != entry else kept


def decode(spec: Spec, point: dict[str, Any]) -> Combo:
    """The pruning, export, quantization and distillation configs one point stands for."""
    assert spec.search is not None
    space = spec.search.space
    i, p_entry = _entry("pruning", space, point)
    where = f"search.space.pruning[{i}]"
    p_entry = _without_zero_cuts(p_entry, _class_of("pruning", p_entry, where))
    p_entry, xcfg = _export_override(spec, p_entry, where)
    (p,) = expand(p_entry, "prune", where)
    j, q_entry = _entry("quantization", space, point)
    q_where = f"search.space.quantization[{j}]"
    (q,) = expand(
        _without_zero_cuts(q_entry, _class_of("quantization", q_entry, q_where)), "quantize", q_where
    )
    kd: TechniqueConfig | None = None
    if (
        p is not None
        and p.changes_shapes
        and (space.distillation is not None or spec.variants.distillation.enabled)
    ):
        kd = _distillation(spec, point)
    return Combo(p, xcfg if p is not None else spec.export, q, kd)


def _distillation(spec: Spec, point: dict[str, Any]) -> TechniqueConfig:
    """The distillation config a point stands for (when its pruning changes shapes)."""
    assert spec.search is not None
    space = spec.search.space.distillation or {}
    over = _resolve("distillation", space, point, frozenset(), "distillation")
    base = spec.variants.distillation.config().to_json()
    try:
        return config_class(base["method"], "distill").model_validate({**base, **over})
    except ValidationError as exc:
        err = exc.errors()[0]
        field_path = ".".join(str(x) for x in err["loc"])
        where = "search.space.distillation" + (f".{field_path}" if field_path else "")
        raise SpecError(f"{where}: {err['msg']} (got {err.get('input')!r})") from None


def check_space(spec: Spec) -> list[Dim]:
    """The space's dimensions, every choice and range end decoded once: bad entries fail at load."""
    assert spec.search is not None
    dims = dimensions(spec.search.space)
    first = {d.name: d.corners()[0] for d in dims}
    combo = decode(spec, first)
    if not dims and combo.pruning is None and combo.quantization is None:
        raise SpecError(
            "search.space: nothing to search (only the baseline, none x none); "
            "expected pruning or quantization choices or ranges"
        )
    for d in dims:
        for value in d.corners():
            decode(spec, {**first, d.name: value})
    if spec.search.space.distillation is not None:  # checked whatever pruning the corners chose
        for d in [d for d in dims if d.name.startswith("distillation.")]:
            for value in d.corners():
                _distillation(spec, {**first, d.name: value})
        _distillation(spec, first)
    if spec.search.sampler == "grid":
        grid_size(dims)  # every range has a step, and the points are not too many
    return dims


def grid_size(dims: list[Dim]) -> int:
    """How many points the grid over `dims` has, counted without listing them; SpecError past GRID_CAP."""
    total = 1
    for d in dims:
        n = d.size()
        if n is None:
            d.grid()  # says which range lacks a step
            return 0
        total *= n
        if total > GRID_CAP:
            raise SpecError(
                f"search.space: the grid has more than {GRID_CAP:,} points; "
                "expected wider steps, fewer choices, or sampler random or tpe"
            )
    return total


def grid_points(dims: list[Dim]) -> list[dict[str, Any]]:
    """Every point of the grid over `dims` (ranges by their step)."""
    grid_size(dims)
    axes = [d.grid() for d in dims]
    return [dict(zip([d.name for d in dims], combo, strict=True)) for combo in itertools.product(*axes)]
