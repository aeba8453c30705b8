"""The current champion, measured again in this run: its graph evaluated on this run's data and
timed side by side with the candidates, so the gate never compares against another run's numbers.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slimline.pipelines.plan.plan import Plan, Stage, logic_version, stage_id
from slimline.pipelines.ports import Executor, Observer, Registry
from slimline.pipelines.run.noise import MIN_PAIRS, TIMED, paired_ratio
from slimline.pipelines.run.records import succeeded
from slimline.pipelines.run.rows import LATENCY_KEYS
from slimline.pipelines.run.stage import Context
from slimline.pipelines.spec.spec import Spec
from slimline.tasks.base import Record
from slimline.tasks.digest import folder_digest

KEY = "champion"  # the champion's key among the graphs timed together


@dataclass
class Champion:
    """The registered holder of the alias, and what this run measured of it."""

    version: str
    variant: str | None
    graph: Path | None = None  # its ONNX file here, when it could be had
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why it could not be measured


def _graph_of(
    champ: Champion, name: str, plan: Plan, records: dict[str, Record], registry: Registry, root: Path
) -> Path:
    """The champion's graph: this run's own when it holds the same variant, else pulled once."""
    for v in plan.variants:
        if v.id == champ.variant and v.stages and succeeded(records.get(v.stages[-1], {})):
            return Path(records[v.stages[-1]]["path"])
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{champ.variant or 'model'}-v{champ.version}")
    dest = root / "champions" / safe
    if not (dest / "model.onnx").is_file():
        return registry.fetch(name, champ.version, dest)
    return dest / "model.onnx"


def measure(
    registry: Registry,
    spec: Spec,
    plan: Plan,
    records: dict[str, Record],
    ctx: Context,
    executor: Executor,
    observer: Observer,
    root: Path,
) -> Champion | None:
    """The champion of `registry.model_name` evaluated on this run's data, or None when there is none.

    Failing to fetch or evaluate it is not fatal to the run: the champion then carries the error,
    and the gate refuses to move the alias rather than compare with stale numbers.
    """
    name = spec.registry.model_name or spec.name
    try:
        holder = registry.alias_holder(name, spec.registry.alias)
    except Exception as exc:  # the store went away: the run goes on, and the gate will refuse
        return Champion("?", None, error=f"cannot ask the registry: {type(exc).__name__}: {exc}")
    if holder is None:
        return None
    champ = Champion(holder.version, holder.variant)
    reference = next(
        (s for s, st in plan.stages.items() if st.kind == "reference" and succeeded(records.get(s, {}))), None
    )
    if reference is None:
        champ.error = "the baseline reference did not finish"
        return champ
    try:
        champ.graph = _graph_of(champ, name, plan, records, registry, root)
    except Exception as exc:  # a store or a file gone: say so, never fall back to old numbers
        champ.error = f"cannot fetch version {holder.version}: {type(exc).__name__}: {exc}"
        return champ
    digest = folder_digest(champ.graph.parent, root / "digests.json")  # cached: big graphs are read once
    sid = stage_id(reference, "evaluate", {}, {"champion": digest}, logic_version("evaluate"))
    st = Stage(sid, "evaluate", {}, KEY, f"champion v{holder.version}", needs=[reference])
    observer.started(st)
    inputs = {KEY: {"path": str(champ.graph)}, reference: records[reference]}
    rec = executor.wait([executor.submit(asdict(st), inputs, ctx)])[1]
    observer.finished(st, rec)
    if succeeded(rec):
        champ.metrics = dict(rec["metrics"])
    else:
        champ.error = f"cannot evaluate version {holder.version}: {rec.get('reason')}"
    return champ


def summarize(champ: Champion, latency: dict[str, Record], selected: list[str], spec: Spec) -> dict[str, Any]:
    """The manifest's `champion` block: what was measured, and each pick's paired latency ratio to it."""
    out = {**asdict(champ), "graph": str(champ.graph) if champ.graph else None, "ratios": {}}
    timed = latency.get(KEY, {})
    if not succeeded(timed) or "samples_ms" not in timed:
        if champ.error is None and champ.graph is not None:
            out["error"] = f"not timed: {timed.get('reason') or 'no latency'}"
        return out
    out["metrics"] = {**champ.metrics, **{k: timed[k] for k in LATENCY_KEYS if k in timed}}
    if len(timed["samples_ms"]) < MIN_PAIRS:  # no speed gain can be judged from a handful of timings
        if spec.select.objectives[0] in TIMED:
            out["error"] = f"only {len(timed['samples_ms'])} timings (evaluate.latency.repeats < {MIN_PAIRS})"
        return out
    for vid in selected:
        if "samples_ms" in latency.get(vid, {}):
            r = paired_ratio(latency[vid]["samples_ms"], timed["samples_ms"], spec.select.latency_tolerance)
            out["ratios"][vid] = [r.median, r.low, r.high]
    return out
