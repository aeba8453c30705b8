"""The spec contract, version 1 (docs/reference/spec.md is generated from it), validated with
pydantic; unknown keys are refused."""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from slimline.pipelines.errors import SpecError, did_you_mean
from slimline.pipelines.metrics import METRICS, reported_by
from slimline.pipelines.schedule.schedule import check_cron
from slimline.pipelines.spec.base import StrictModel
from slimline.pipelines.spec.reader import read_yaml
from slimline.pipelines.spec.search import SearchSpec
from slimline.pipelines.spec.serve import ServeConfig
from slimline.tasks.base import TASKS, Task, TechniqueConfig
from slimline.tasks.catalog import UnknownTechnique, config_class
from slimline.tasks.evaluate import LatencyConfig
from slimline.tasks.export import ExportConfig
from slimline.tasks.quantization.peers import RECIPES, optimum_preset

PEER_METHOD = "peer-int8"  # the technique that rebuilds a peer's one-liner (tasks/quantization/peers.py)
BASELINES = ("ort-default", "optimum-auto", *(r for r in RECIPES if r != "ort-default"))
DEFAULT_BASELINES = ("ort-default", "optimum-auto")
LATER_DEFAULTS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("baselines",), None),
    (("select", "beat_peers"), False),
    (("evaluate", "latency", "shape"), "fixed"),
)


class ModelSpec(StrictModel):
    source: str = Field(min_length=1)
    task: Task = "feature-extraction"


BUILTIN_SAMPLES = {
    "corpus": 256,
    "python-docs": 256,
    "lee-similarity": 50,
    "movie-polarity": 160,
    "offline": 2322,  # all of it
}


class BuiltinData(StrictModel):
    # corpus: the human-written sentences fidelity is judged on; python-docs: prose sentences
    # of the Python reference, offline text to distil on; lee-similarity and movie-polarity:
    # human-rated data installed with gensim (tasks.rated); offline: every text of the last three
    # interleaved (distillation text: news, reviews and technical prose, never the corpus).
    builtin: Literal["corpus", "python-docs", "lee-similarity", "movie-polarity", "offline"] = "corpus"
    samples: int | None = Field(default=None, ge=1)  # None: BUILTIN_SAMPLES

    def count(self) -> int:
        """How many texts are evaluated."""
        return self.samples or BUILTIN_SAMPLES[self.builtin]


class FileData(StrictModel):
    path: str
    text_field: str = "text"
    label_field: str | None = None
    # Sentence pairs rated by people: the second sentence's field and the rating's.
    pair_field: str | None = None
    score_field: str | None = None
    samples: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _pairs_or_labels(self) -> FileData:
        if (self.pair_field is None) != (self.score_field is None):
            raise ValueError("pair_field and score_field go together (a rated pair of sentences)")
        if self.pair_field and self.label_field:
            raise ValueError("give label_field or pair_field/score_field, not both")
        return self


class HubData(StrictModel):
    hf: str
    config: str | None = None
    split: str = "validation"
    text_field: str = "text"
    label_field: str | None = None
    samples: int | None = Field(default=None, ge=1)


def _source_kind(value: Any) -> str | None:
    """Which kind of data source a mapping is, by its key: errors then name that kind's fields only."""
    if isinstance(value, dict):  # neither path nor hf: the built-in corpus, `builtin` defaulted
        return next((f"source:{k}" for k in ("path", "hf") if k in value), "source:builtin")
    kinds = {BuiltinData: "builtin", FileData: "path", HubData: "hf"}
    return f"source:{kinds[type(value)]}" if type(value) in kinds else None


Source = Annotated[
    Annotated[BuiltinData, Tag("source:builtin")]
    | Annotated[FileData, Tag("source:path")]
    | Annotated[HubData, Tag("source:hf")],
    Discriminator(
        _source_kind,
        custom_error_type="data_source",
        custom_error_message="expected {builtin: ...}, {path: ...} or {hf: ...}",
    ),
]


class CalibrationSpec(StrictModel):
    samples: int = Field(default=64, ge=1)


class DataSpec(StrictModel):
    eval: Source = BuiltinData()
    calibration: CalibrationSpec = CalibrationSpec()
    train: Source | None = None  # distillation text; never eval text
    # Tokens per text; None: the model's own maximum (capped at it in any case; pipelines.run.run).
    max_length: int | None = Field(default=None, ge=8, le=8192)


# There is one distillation method: a spec need not name it, and its dump does not repeat it.
DISTILL_METHOD = "distill"


class _DistillationSwitch:
    """What `variants.distillation` adds to the distillation technique's own config."""

    def config(self: Any) -> TechniqueConfig:
        """The technique config of the distill stage."""
        return config_class(DISTILL_METHOD, "distill").model_validate(self.model_dump(exclude={"enabled"}))


def _distillation_spec(method: str) -> type[TechniqueConfig]:
    """The distillation technique's config (from the catalog: the spec names no technique class),
    plus whether to distil the shape-changing variants at all; its settings are the spec's keys."""
    return create_model(
        "DistillationSpec",
        __base__=(config_class(method, "distill"), _DistillationSwitch),
        __module__=__name__,
        __doc__=_DistillationSwitch.__doc__,
        enabled=(bool, False),
        method=(Literal[method], Field(default=method, exclude=True)),  # type: ignore[valid-type]
    )


DistillationSpec = _distillation_spec(DISTILL_METHOD)


Entry = str | dict[str, Any]


class VariantsSpec(StrictModel):
    pruning: list[Entry] = Field(default_factory=lambda: ["none"], min_length=1)
    quantization: list[Entry] = Field(default_factory=lambda: ["none"], min_length=1)
    distillation: DistillationSpec = DistillationSpec()


class ServingLoad(StrictModel):
    """`evaluate.serving`: after selection, the pick and the fp32 baseline are served side by
    side on Ray Serve (loopback) and loaded alike; the manifest, report and registry get what the
    endpoint delivers, not only what the graph does in process."""

    clients: int = Field(default=8, ge=1, le=256)  # requests in flight at once
    texts_per_request: int = Field(default=1, ge=1, le=256)
    requests: int = Field(default=200, ge=1, le=100_000)  # per model and round
    rounds: int = Field(default=2, ge=1, le=20)  # baseline and pick alternate within each round
    time_limit_s: float = Field(default=60.0, gt=0, le=3600)  # per model and round, whatever is left
    ingress: Literal["proxy", "haproxy"] = "proxy"


class EvaluateSpec(StrictModel):
    latency: LatencyConfig = LatencyConfig()
    batch_size: int = Field(default=16, ge=1)
    serving: ServingLoad | None = None  # off unless given: it starts Serve and costs seconds


class Bound(StrictModel):
    min: float | None = None
    max: float | None = None


class SelectSpec(StrictModel):
    constraints: dict[str, Bound] = Field(default_factory=dict)
    objectives: list[str] = Field(default_factory=lambda: ["latency_p50_ms", "size_mb"], min_length=1)
    top_k: int = Field(default=3, ge=1)
    # Two graphs whose paired latency ratio is within this of 1 (or not told apart by the noise)
    # are tied on speed; fidelity, then size, decides between them.
    latency_tolerance: float = Field(default=0.05, ge=0, lt=1)
    # Untimed objectives (size, FLOPs, ...) within this relative difference are tied too.
    tolerance: float = Field(default=0.01, ge=0, lt=1)
    # Register nothing when a peer's one-line recipe (`baselines:`) beats the pick in this run.
    beat_peers: bool = False

    @field_validator("constraints", "objectives")
    @classmethod
    def _known_metrics(cls, value: Any, info: ValidationInfo) -> Any:
        # parse_spec passes the model's task: the list then names only the metrics it reports.
        task = (info.context or {}).get("task")
        known = reported_by(task)
        for name in value:
            if name not in METRICS:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"unknown metric {name!r}; {hint}expected one of {', '.join(known)}")
        return value

    @field_validator("constraints")
    @classmethod
    def _within_bounds(cls, value: dict[str, Bound]) -> dict[str, Bound]:
        """A bound a metric can never reach is a typo (fidelity 98 for 0.98), not a wish."""
        for name, bound in value.items():
            low, high = METRICS[name].bounds
            for side in ("min", "max"):
                x = getattr(bound, side)
                if x is None or ((low is None or x >= low) and (high is None or x <= high)):
                    continue
                span = f"{'-inf' if low is None else f'{low:g}'}..{'inf' if high is None else f'{high:g}'}"
                hint = f" — did you mean {x / 100:g}?" if high == 1.0 and 1 < x <= 100 else ""
                raise ValueError(f"{name}.{side}: {x:g} is outside {name}'s range; expected {span}{hint}")
        return value


# What MLflow accepts as a registered model name, and what stays a safe path segment everywhere.
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class RegistrySpec(StrictModel):
    model_name: str | None = Field(default=None, pattern=NAME, max_length=100)
    tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI, else sqlite:///slimline.db
    alias: str = "champion"
    # Which child runs get their ONNX model logged: every finished variant, or the selection only.
    log_models: Literal["all", "selected"] = "selected"
    # The alias moves only to a version that beats the champion by more than this on the first
    # objective (timed: the whole CI of the paired ratio), or ties it and has more fidelity.
    min_gain: float = Field(default=0.05, ge=0, lt=1)
    fidelity_epsilon: float = Field(default=0.005, ge=0, le=1)

    @field_validator("alias")
    @classmethod
    def _mlflow_alias(cls, value: str) -> str:
        from slimline.pipelines.uris import alias_problem

        problem = alias_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class ResourcesSpec(StrictModel):
    gpus_per_task: float = Field(default=0, ge=0)
    cpus_per_task: int = Field(default=1, ge=1)


class ScheduleSpec(StrictModel):
    cron: str
    missed: Literal["skip", "run-once"] = "skip"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        try:
            check_cron(value)
        except SpecError as exc:
            reason = str(exc).removeprefix("schedule.cron: ")
            if reason.startswith("not a valid"):
                reason = "expected a 5-field cron expression such as '0 3 * * *'"
            raise ValueError(reason) from None
        return value


class ArtifactsSpec(StrictModel):
    """Where stages and runs are written, and what `slimline gc` keeps of them."""

    path: str = Field(default="./artifacts", min_length=1)
    # all: only stages no run refers to are removable; selected: the latest run's baseline and
    # selected variants (and what they were built from); registered: its registered ones only.
    keep: Literal["all", "selected", "registered"] = "selected"


class Spec(StrictModel):
    version: Literal[1]
    name: str = Field(min_length=1, max_length=100, pattern=NAME)  # in file names: ≤ 255 bytes with ids
    model: ModelSpec
    data: DataSpec = DataSpec()
    variants: VariantsSpec = VariantsSpec()
    evaluate: EvaluateSpec = EvaluateSpec()
    select: SelectSpec = SelectSpec()
    registry: RegistrySpec = RegistrySpec()
    resources: ResourcesSpec = ResourcesSpec()
    export: ExportConfig = ExportConfig()  # a pruning entry may override it with its own `export:`
    artifacts: ArtifactsSpec = ArtifactsSpec()
    schedule: ScheduleSpec | None = None
    search: SearchSpec | None = None  # search the space instead of running the `variants` grid
    serve: ServeConfig | None = None  # how `slimline serve` runs this model (not part of the digest)
    # The peers' one-line int8 recipes timed beside the pick (never selected nor registered);
    # None: `ort-default` and `optimum-auto` for encoders and classifiers, none for causal LMs.
    baselines: list[str] | None = None

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if name not in BASELINES:
                raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
        return value

    def peer_configs(self, cpu_flags: str, machine: str = "") -> list[TechniqueConfig]:
        """The peers' quantization configs for a run on this CPU (`optimum-auto` resolved by it)."""
        names = self.baselines
        if names is None:
            names = [] if self.model.task == "causal-lm" else list(DEFAULT_BASELINES)
        recipes = [optimum_preset(cpu_flags, machine) if n == "optimum-auto" else n for n in names]
        cls = config_class(PEER_METHOD, "quantize")
        return [cls.model_validate({"recipe": r}) for r in dict.fromkeys(recipes)]

    @field_validator("artifacts", mode="before")
    @classmethod
    def _path_alone(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value  # `artifacts: ./runs` still works

    def public(self) -> dict[str, Any]:
        """The spec as JSON data with the tracking URI's secret masked: what files and artifacts keep."""
        from slimline.pipelines.uris import masked

        data = self.model_dump(mode="json")
        if self.registry.tracking_uri:
            data["registry"]["tracking_uri"] = masked(self.registry.tracking_uri)
        return data

    def digest(self) -> str:
        """Content hash of the validated spec (key order and formatting do not matter)."""
        # Serving settings change nothing a run computes (evaluate.serving measures after selection).
        data = self.model_dump(mode="json", exclude={"serve": True, "evaluate": {"serving"}})
        # Fields added later, at their defaults, are left out: the digest of every older spec stays.
        for path, default in LATER_DEFAULTS:
            *parents, key = path
            block = data
            for part in parents:
                block = block.get(part) or {}
            if block.get(key, default) == default:
                block.pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _short(value: Any, limit: int = 80) -> str:
    """repr of an offending value, cut so that an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _field_error(exc: ValidationError, where: str, fields: Iterable[str] = ()) -> SpecError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":  # a typo of a setting: say which one was meant
        return SpecError(f"{where}.{loc}: unknown key{did_you_mean(err['loc'][-1], fields)}")
    return SpecError(f"{where}.{loc}: {err['msg']} (got {_short(err.get('input'))})")


def expand(entry: Entry, stage: str, where: str) -> list[TechniqueConfig | None]:
    """Expand one variants entry into technique configs ("none" → [None]).

    List values form a grid, except in the fields the technique declares list-valued.
    """
    if entry == "none" or entry == {"method": "none"}:
        return [None]
    if isinstance(entry, str):
        entry = {"method": entry}
    if not isinstance(entry.get("method"), str):
        raise SpecError(f"{where}.method: expected one technique name (got {entry.get('method')!r})")
    try:
        cls = config_class(str(entry.get("method")), stage)
    except UnknownTechnique as exc:
        raise SpecError(f"{where}.method: {exc}") from None
    keys = list(entry)
    grids = [v if isinstance(v, list) and k not in cls.list_fields else [v] for k, v in entry.items()]
    empty = next((k for k, g in zip(keys, grids, strict=True) if not g), None)
    if empty is not None:  # an empty axis would silently drop the whole entry from the grid
        raise SpecError(f"{where}.{empty}: empty list (a grid axis needs at least one value)")
    out: list[TechniqueConfig | None] = []
    for combo in itertools.product(*grids):
        try:
            out.append(cls.model_validate(dict(zip(keys, combo, strict=True))))
        except ValidationError as exc:
            raise _field_error(exc, where, cls.model_fields) from None
    return out


def _export_override(spec: Spec, entry: Entry, where: str) -> tuple[Entry, ExportConfig]:
    """Split a pruning entry's own `export:` settings (merged over the spec's) from its technique."""
    if not isinstance(entry, dict) or "export" not in entry:
        return entry, spec.export
    entry = dict(entry)
    override = entry.pop("export")
    if not isinstance(override, dict):
        raise SpecError(f"{where}.export: expected a mapping of export settings (got {override!r})")
    try:
        return entry, ExportConfig.model_validate({**spec.export.model_dump(), **override})
    except ValidationError as exc:
        raise _field_error(exc, f"{where}.export") from None


def variant_axes(
    spec: Spec,
) -> tuple[list[tuple[TechniqueConfig | None, ExportConfig]], list[TechniqueConfig | None]]:
    """All (pruning config, export config) pairs and all quantization configs, deduplicated.

    None means no technique; the first pruning pair is always (None, spec.export): the baseline.
    """
    pruning: list[tuple[TechniqueConfig | None, ExportConfig]] = [(None, spec.export)]
    quant: list[TechniqueConfig | None] = [None]
    for i, e in enumerate(spec.variants.pruning):
        where = f"variants.pruning[{i}]"
        entry, xcfg = _export_override(spec, e, where)
        pruning += [(c, xcfg) for c in expand(entry, "prune", where) if (c, xcfg) not in pruning]
    for i, e in enumerate(spec.variants.quantization):
        quant += [c for c in expand(e, "quantize", f"variants.quantization[{i}]") if c not in quant]
    return pruning, quant


def schema_object(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema a JSON Schema field holds directly (through a $ref, or one of an anyOf
    with null), or None: the one walk behind did-you-mean and the generated reference page."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[1]]
        return target if "properties" in target else None
    for option in node.get("anyOf", []):
        found = schema_object(option, defs)
        if found is not None:
            return found
    return None


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the spec's schema allows in the mapping at `loc` (none when it cannot tell)."""
    schema = Spec.model_json_schema()
    defs = schema.get("$defs", {})
    node: dict[str, Any] | None = schema
    for part in loc:
        prop = node.get("properties", {}).get(str(part)) if node else None
        node = schema_object(prop, defs) if prop is not None else None
    return list(node.get("properties", {})) if node else []


def _elsewhere(key: str) -> str:
    """` (did you mean 'a.b'?)` when a nested key of the spec is close to `key`."""
    paths: list[str] = []

    def walk(prefix: tuple[str, ...]) -> None:
        for k in _keys_at(prefix):
            paths.append(".".join((*prefix, k)))
            if len(prefix) < 2:
                walk((*prefix, k))

    walk(())
    by_leaf = {p.rsplit(".", 1)[-1]: p for p in reversed(paths)}
    close = difflib.get_close_matches(key, list(by_leaf), n=1)
    return f" (did you mean {by_leaf[close[0]]!r}?)" if close else ""


def format_validation(exc: ValidationError, file: str) -> str:
    err = exc.errors()[0]
    skip = ("function-", "tagged-union", "source:")
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(skip))
    msg = err["msg"].replace("Extra inputs are not permitted", "unknown key")
    got = "" if err["type"] == "missing" else f" (got {_short(err.get('input'))})"
    if err["type"] == "extra_forbidden":  # a typo of a key: the closest key of that mapping,
        key = err["loc"][-1]  # or a key of another place (`quantization` is under `variants`)
        hint = did_you_mean(key, _keys_at(err["loc"][:-1])) or _elsewhere(str(key))
        msg, got = "unknown key" + hint, ""
    extra = f"; and {len(exc.errors()) - 1} more" if len(exc.errors()) > 1 else ""
    return f"{file}: {loc or '<root>'}: {msg}{got}{extra}"


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file, or raise SpecError with one line: file, field path, expectation.

    A search space is decoded by `slimline.api.validate` (the plan owns the space, and the spec
    must not import the plan)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    return parse_spec(read_yaml(path), str(path))


def parse_spec(data: Any, where: str = "<spec>") -> Spec:
    """Validate spec data (a file's, or a dict from Python), or raise SpecError with one line that
    starts with `where` (the file, or `<spec>`): field path and expectation."""
    path = where
    if not isinstance(data, dict):
        raise SpecError(f"{path}: <root>: expected a mapping of spec keys, got {type(data).__name__}")
    model = data.get("model")
    task = model.get("task", ModelSpec.model_fields["task"].default) if isinstance(model, dict) else None
    context = {"task": task} if task in TASKS else {}
    try:
        spec = Spec.model_validate(data, context=context)
    except ValidationError as exc:
        raise SpecError(format_validation(exc, str(path))) from None
    try:
        variant_axes(spec)  # technique configs are validated now, not mid-run
        check_data(spec)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    return spec


# Which task reads the eval data's labels, and which its rated pairs.
_LABELLED = {"label_field": "text-classification", "pair_field": "feature-extraction"}
_BUILTIN_TASK = {"movie-polarity": "text-classification", "lee-similarity": "feature-extraction"}


def check_data(spec: Spec) -> None:
    """Labels and rated pairs only mean something to one task each: refuse them for another; and
    a metric the model's task never reports would leave every variant unselectable."""
    task = spec.model.task
    for field in ("constraints", "objectives"):
        for name in getattr(spec.select, field):
            if task not in METRICS[name].tasks:
                known = ", ".join(reported_by(task))
                only = ", ".join(t for t in TASKS if t in METRICS[name].tasks)
                raise SpecError(
                    f"select.{field}: {name} is reported by {only} models only; model.task is {task}; "
                    f"expected one of {known}"
                )
    src = spec.data.eval
    for key, wants in _LABELLED.items():
        if getattr(src, key, None) and task != wants:
            raise SpecError(f"data.eval.{key}: read by {wants} models only; model.task is {task}")
    wants = _BUILTIN_TASK.get(getattr(src, "builtin", ""))
    if wants and task != wants:
        raise SpecError(f"data.eval.builtin: {src.builtin} is rated for {wants}; model.task is {task}")
