"""The plan: the grid expanded into a DAG of stages with content-hash ids.

Shared prefixes appear once: one load, one prune per pruning setting, one export + optimize per
pruned model, then quantize and evaluate per variant. A stage's id hashes its parent's id, its
config and the library versions that change its output, so a finished stage is found again by
any later run that needs the same thing.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from slimline.pipelines.run.records import Status
from slimline.pipelines.spec.spec import Spec, variant_axes
from slimline.tasks.base import StepConfig, TechniqueConfig, package_version
from slimline.tasks.export import ExportConfig
from slimline.tasks.load import LoadConfig
from slimline.tasks.optimize import OptimizeConfig
from slimline.tasks.stages import STAGES

# The libraries whose changes change artifacts: their versions join every stage id.
ARTIFACT_LIBRARIES = (
    "slimline",
    "torch",
    "transformers",
    "onnx",
    "onnxscript",  # the dynamo exporter's ONNX builder
    "onnxruntime-gpu",
    "onnxruntime",
    "onnxruntime-genai-cuda",  # the decoding-graph builder (either build)
    "onnxruntime-genai",
    "gguf",  # de-quantizes GGUF sources
)


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose changes change artifacts (those installed)."""
    return {pkg: v for pkg in ARTIFACT_LIBRARIES if (v := package_version(pkg)) is not None}


def stage_id(
    parent: str | None,
    kind: str,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    version: int = 1,
) -> str:
    """Content hash of a stage's inputs: parent, config and its version, data, library versions."""
    payload = {
        "parent": parent,
        "kind": kind,
        "config": config,
        "config_version": version,
        "extra": extra or {},
        "versions": library_versions(),
    }
    return f"{kind}-" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def logic_version(kind: str) -> int:
    """The version a stage without a config hashes into its id (see StageKind.logic_version)."""
    version = STAGES[kind].logic_version
    if version is None:
        raise ValueError(f"a {kind} stage has a config: its config's version counts")
    return version


@dataclass
class Stage:
    """One unit of work: its kind, config, parent and the resources it asks for."""

    id: str
    kind: str  # load | prune | distill | export | optimize | reference | quantize | evaluate
    config: dict[str, Any]
    parent: str | None
    label: str
    resources: dict[str, float] = field(default_factory=dict)
    needs: list[str] = field(default_factory=list)  # other stages whose records it reads
    # A distillation may continue from one of these (the same one stopped earlier), largest first.
    resume: list[str] = field(default_factory=list)


@dataclass
class Variant:
    """One pruning × quantization combination and the stage that finishes it."""

    id: str
    pruning: dict[str, Any] | None
    quantization: dict[str, Any] | None
    label: str
    stages: list[str]  # its chain of stage ids, load first (none when its pruning cannot run here)
    distillation: dict[str, Any] | None = None
    status: Status = Status.PLANNED  # planned | skipped
    reason: str | None = None
    peer: str | None = None  # a peer's one-line recipe (`baselines:`): timed and shown, never selected


@dataclass
class Plan:
    """The DAG and the variants it yields."""

    stages: dict[str, Stage]
    variants: list[Variant]
    baseline: str  # id of the none × none variant
    model_digest: str | None = None  # content digest of the base model, as its load stage id hashes it

    def stage_of(self, variant: Variant, kind: str) -> str | None:
        """The id of the variant's stage of `kind` in its chain, or None when it has none."""
        return next((s for s in variant.stages if self.stages[s].kind == kind), None)

    def children(self, sid: str) -> list[str]:
        """Stage ids whose parent is `sid`."""
        return [s.id for s in self.stages.values() if s.parent == sid]

    def priorities(self) -> dict[str, float]:
        """Each stage's longest path of estimated work to the end of the DAG, itself included.

        Running the stage with the most work behind it first keeps every worker busy until the
        end, instead of leaving one long chain (prune, export, ...) for last.
        """
        dependents: dict[str, list[str]] = {sid: [] for sid in self.stages}
        for st in self.stages.values():
            for dep in [st.parent, *st.needs]:
                if dep:
                    dependents[dep].append(st.id)
        memo: dict[str, float] = {}
        for sid in reversed(list(self.stages)):  # dependents are always added after what they need
            tail = max((memo[d] for d in dependents[sid]), default=0.0)
            st = self.stages[sid]
            memo[sid] = STAGES[st.kind].cost_of(st.config) + tail
        return memo

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON data."""
        return {
            "stages": [asdict(s) for s in self.stages.values()],
            "variants": [asdict(v) for v in self.variants],
        }


class Combo(NamedTuple):
    """One variant's recipe: pruning (with its export settings), quantization, distillation."""

    pruning: TechniqueConfig | None
    export: ExportConfig
    quantization: TechniqueConfig | None
    distillation: TechniqueConfig | None = None


def grid_combos(spec: Spec) -> list[Combo]:
    """The spec's grid: every pruning × quantization; shape-changing prunings distilled if enabled."""
    prunings, quants = variant_axes(spec)
    kd = spec.variants.distillation.config() if spec.variants.distillation.enabled else None
    return [
        Combo(p, x, q, kd if p is not None and p.changes_shapes else None)
        for p, x in prunings
        for q in quants
    ]


def _resume_ids(
    kd: TechniqueConfig, parent: str, extra: dict[str, Any], needs: list[str], fractions: tuple[float, ...]
) -> list[str]:
    """Ids of the same distillation stopped earlier (after each fraction of its steps), largest first.

    Only a `resumable` technique stops early and continues; its config has `steps` and `stop_after`."""
    if not kd.resumable:
        return []
    reached = kd.stop_after or kd.steps
    stops = sorted({math.ceil(f * kd.steps) for f in fractions if 0 < f < 1} - {0}, reverse=True)
    return [
        stage_id(parent, "distill", c.to_json(), {**extra, "needs": needs}, c.version)
        for c in (kd.model_copy(update={"stop_after": s}) for s in stops if s < reached)
    ]


def _label(
    cfg: TechniqueConfig | None, export: ExportConfig | None = None, default: ExportConfig | None = None
) -> str:
    label = "none" if cfg is None else cfg.label()
    if export is not None and export != default:
        base = default.model_dump() if default is not None else {}
        changed = {k: v for k, v in export.model_dump().items() if base.get(k) != v}
        label += " +export(" + ", ".join(f"{k}={v}" for k, v in changed.items()) + ")"
    return label


def _cannot_run(spec: Spec, techniques: list[TechniqueConfig | None], gpus_available: bool) -> str | None:
    """Why this combination cannot run here (read from the techniques' capabilities), or None."""
    gpu_task = gpus_available and spec.resources.gpus_per_task > 0
    for t in techniques:
        if t is None:
            continue
        if t.needs_gpu and not gpu_task:
            return t.needs_gpu
        if spec.model.task not in t.tasks:
            return f"{t.method} does not support {spec.model.task} models"
    return None


def _groups(spec: Spec, combos: list[Combo]) -> list[tuple[Combo, list[TechniqueConfig | None]]]:
    """Combos grouped by their chain (pruning, export, distillation), in first-seen order; the
    baseline chain (no pruning, the spec's export, no distillation) first, with `none` quantization."""
    baseline = Combo(None, spec.export, None, None)
    groups: list[tuple[Combo, list[TechniqueConfig | None]]] = [(baseline, [None])]
    for c in combos:
        chain = c._replace(quantization=None)
        group = next((qs for head, qs in groups if head == chain), None)
        if group is None:
            groups.append((chain, group := []))
        if c.quantization not in group:
            group.append(c.quantization)
    return groups


def build_plan(
    spec: Spec,
    data_digest: str,
    *,
    gpus_available: bool = False,
    train_digest: str | None = None,
    model_digest: str | None = None,
    combos: list[Combo] | None = None,
    resume_fractions: tuple[float, ...] = (),
    build_digest: str | None = None,
    peers: tuple[TechniqueConfig, ...] = (),
) -> Plan:
    """Expand the spec's grid (or the given `combos`, e.g. a search's trials) into stages and variants.

    The load stage's id hashes the model's content (`model_digest`), not where it lies, so a
    model edited in place is a new input and a moved one is not. A combo with distillation is
    distilled (from the loaded base model, on the training text `train_digest` identifies)
    before it is exported. The baseline (none × none) is always planned, first. A distillation
    may resume from the same one stopped after each of `resume_fractions` of its steps (a
    search's lower rungs): those stages' ids are its `resume` candidates. `build_digest` (default:
    `data_digest`) identifies the data that prune, export and quantize read: a search's cheaper
    rungs evaluate on fewer texts (another `data_digest`) but build the very same graphs.
    `peers` (quantization configs of the peers' recipes) quantize the baseline's graph: variants
    marked `peer`, which selection leaves out.
    """
    build = build_digest or data_digest
    res = {"num_cpus": float(spec.resources.cpus_per_task), "num_gpus": float(spec.resources.gpus_per_task)}
    stages: dict[str, Stage] = {}

    def add(
        kind: str,
        cfg: StepConfig | None,
        parent: str | None,
        label: str,
        extra: dict[str, Any] | None = None,
        needs: list[str] | None = None,
        identity: dict[str, Any] | None = None,  # what the id hashes, when not the whole config
    ) -> str:
        config = cfg.to_json() if cfg is not None else {}
        version = cfg.version if cfg is not None else logic_version(kind)
        ident = config if identity is None else identity
        sid = stage_id(parent, kind, ident, {**(extra or {}), "needs": needs or []}, version)
        stages.setdefault(sid, Stage(sid, kind, config, parent, label, res, needs or []))
        return sid

    load_cfg = LoadConfig(source=spec.model.source, task=spec.model.task)
    # Content, not path: the model's digest stands for the source (unknown in a dry run: the path).
    model_id = {"task": spec.model.task, "model": model_digest or f"path:{spec.model.source}"}
    load_id = add("load", load_cfg, None, "load base model", identity=model_id)
    opt_cfg = OptimizeConfig()
    variants: list[Variant] = []
    baseline = ""
    reference = ""
    groups = _groups(spec, grid_combos(spec) if combos is None else combos)
    peer_of = {c: str(c.to_json().get("recipe", c.label())) for c in peers}
    groups[0][1].extend(c for c in peers if c not in groups[0][1])
    for i, (head, quants) in enumerate(groups):
        p, xcfg, _, distilled = head  # group 0 is the baseline chain
        chain = [load_id]
        plabel = _label(p, xcfg, spec.export)
        if distilled is not None:
            plabel += " +kd" + (f"@{distilled.stop_after}" if getattr(distilled, "stop_after", None) else "")
        if p is not None and (why := _cannot_run(spec, [p], gpus_available)):
            # Nothing of this pruning can run here: its variants are skipped, and it adds no stages.
            for q in quants:
                label = f"{plabel} × {_label(q)}"
                vid = "v-" + hashlib.sha256(f"{load_id}|{label}".encode()).hexdigest()[:10]
                v = Variant(vid, p.to_json(), q.to_json() if q else None, label, [], status=Status.SKIPPED)
                v.reason, v.distillation = why, distilled.to_json() if distilled else None
                variants.append(v)
            continue
        if p is not None:
            # Activation importance reads calibration text, so the data joins the id.
            chain.append(add("prune", p, load_id, _label(p), {"data": build}))
        if distilled is not None:
            extra = {"train": train_digest, "max_length": spec.data.max_length}
            chain.append(add("distill", distilled, chain[-1], f"distill {plabel}", extra, [load_id]))
            stages[chain[-1]].resume = _resume_ids(distilled, chain[-2], extra, [load_id], resume_fractions)
        chain.append(add("export", xcfg, chain[-1], f"export {plabel}", {"data": build}))
        chain.append(add("optimize", opt_cfg, chain[-1], f"optimize {plabel}"))
        if i == 0:
            # Baseline outputs on the eval set (ONNX fp32 and PyTorch fp32), computed once.
            reference = add(
                "reference", None, chain[-1], "baseline reference", {"data": data_digest}, [load_id]
            )
        for q in quants:
            vchain = list(chain)
            label = f"{plabel} × {_label(q)}"
            vid = "v-" + hashlib.sha256(f"{chain[-1]}|{_label(q)}".encode()).hexdigest()[:10]
            v = Variant(vid, p.to_json() if p else None, q.to_json() if q else None, label, vchain)
            v.distillation = distilled.to_json() if distilled is not None else None
            v.peer = peer_of.get(q) if i == 0 and q is not None else None
            why = _cannot_run(spec, [p, q], gpus_available)
            if why:
                v.status, v.reason = Status.SKIPPED, why
            else:
                if q is not None:
                    vchain.append(add("quantize", q, chain[-1], label, {"data": build}))
                vchain.append(add("evaluate", None, vchain[-1], label, {"data": data_digest}, [reference]))
            if i == 0 and q is None:
                baseline = vid
            variants.append(v)
    return Plan(stages, variants, baseline, model_digest)
