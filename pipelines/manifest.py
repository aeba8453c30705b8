"""The run manifest as a typed contract: what `<artifacts>/<run_id>/manifest.json` holds.

Every model allows extra keys: the run writes more than the contract names (the search block,
distillation curves, sensitivity tables...) and a reader must keep what it does not know, so a
manifest survives a round trip through `Manifest` unchanged. Fields that older manifests may lack
have defaults; `to_json` gives back only what was set, so defaults never leak into the file.
docs/manifest.schema.json is `Manifest.model_json_schema()` (a test keeps it current).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slimline.pipelines.errors import FatalInputError
from slimline.pipelines.run.records import RunStatus, Status

# Bump when a field changes meaning or a required field appears; manifests without the field are version 1.
SCHEMA_VERSION = 1

# A metric's value: a number, a confidence interval ([low, high]) or None when not measured.
MetricValue = int | float | list[int | float] | None


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Environment(_Open):
    """Where the run ran: library versions, CPU, providers and GPUs (plus the executor's description)."""

    python: str | None = None
    torch: str | None = None
    transformers: str | None = None
    onnxruntime: str | None = None
    ray: str | None = None
    mlflow: str | None = None
    cpu_flags: str | list[str] | None = None
    providers: list[str] = Field(default_factory=list)
    gpus: int = 0


class VariantRow(_Open):
    """One variant of the sweep: its techniques, what became of it, and its metrics."""

    id: str
    label: str | None = None
    pruning: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    distillation: dict[str, Any] | None = Field(
        default=None, description="{config, the training curve and where it ran}; null without distillation"
    )
    status: Status
    reason: str | None = None
    metrics: dict[str, MetricValue] = Field(
        default_factory=dict, description="metric name -> value or [low, high] (docs/metrics.md)"
    )
    onnx: str | None = Field(default=None, description="the variant's ONNX graph")
    peer: str | None = Field(
        default=None, description="a peer's one-line recipe (baselines:): timed and shown, never selected"
    )
    served: dict[str, float] | None = Field(
        default=None,
        description="served on Ray Serve under evaluate.serving's load: rps, texts_per_s, p50_ms, ...",
    )
    stages: list[str] | None = Field(
        default=None, description="every stage id it was built from or read (what gc keeps for it)"
    )


class Baseline(_Open):
    """The uncompressed model's metrics (extra keys), which variant it is, and ONNX vs torch fidelity."""

    variant: str | None = None
    onnx_vs_torch_fidelity: float | None = None


class Champion(_Open):
    """The alias holder as this run measured it, and each pick's paired latency ratio to it."""

    version: str
    variant: str | None = None
    graph: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    ratios: dict[str, list[float]] = Field(
        default_factory=dict, description="variant id -> paired latency ratio [median, low, high]"
    )


class Registered(_Open):
    """A model version this run registered."""

    name: str
    version: str
    variant: str | None = None
    aliases: list[str] = Field(default_factory=list)


class Gate(_Open):
    """Whether the alias moved to the best new version, and why."""

    alias: str
    moved: bool
    reason: str
    candidate: str | None = None
    previous: str | None = None
    ratio: list[float] | None = None


class Manifest(_Open):
    """What one run did and decided; written by the run, completed by publish (registered, gate)."""

    schema_version: int = Field(
        default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION, description="absent in older manifests: 1"
    )
    run_id: str
    spec_hash: str | None = None
    status: RunStatus
    started: str | None = Field(default=None, description="ISO 8601, UTC")
    finished: str | None = Field(default=None, description="ISO 8601, UTC")
    interrupted: bool = False
    environment: Environment = Field(default_factory=Environment)
    baseline: Baseline
    variants: list[VariantRow]
    selected: list[str] = Field(description="variant ids, best first")
    rejected: dict[str, str] = Field(default_factory=dict, description="variant id -> why not selected")
    ties: dict[str, str] = Field(default_factory=dict, description="variant id -> what it tied with")
    champion: Champion | None = None
    registered: list[Registered] = Field(default_factory=list)
    gate: Gate | None = None
    registry: str | None = Field(default=None, description="the store registered in, password masked")
    tick_id: str | None = None
    stages_per_node: dict[str, int] = Field(default_factory=dict)
    submission_id: str | None = None
    peers: dict[str, Any] | None = Field(
        default=None,
        description="baselines: the peers run, the best, and the pick against it (speedup, CI, verdict)",
    )
    deployed: dict[str, Any] | None = Field(
        default=None,
        description="evaluate.serving: the load, each served graph's medians and rounds, pick/baseline",
    )
    base_model_digest: str | None = None
    search: dict[str, Any] | None = Field(
        default=None, description="a search's trials, rungs and best so far; null for a grid"
    )

    def to_json(self) -> dict[str, Any]:
        """The plain JSON dict: what was set (defaults left out), with the schema version."""
        return {"schema_version": self.schema_version, **self.model_dump(mode="json", exclude_unset=True)}

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read and validate a manifest file, or raise FatalInputError with one line: the file, the
        field path and what is wrong. Manifests older than `schema_version` load as version 1."""
        path = Path(path)
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise FatalInputError(f"{path}: no such manifest") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FatalInputError(f"{path}: not a slimline manifest: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise FatalInputError(f"{path}: not a slimline manifest: <root>: expected a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            # Here, not at the top: reading a manifest (gc, push) need not import every technique.
            from slimline.pipelines.spec.spec import format_validation

            line = format_validation(exc, str(path))
            raise FatalInputError(f"{path}: not a slimline manifest: {line[len(str(path)) + 2 :]}") from None
