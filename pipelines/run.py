"""One pipeline run: data → plan → execute the DAG → time latency → select → manifest."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import platform
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipelines.plan import Plan, Stage, build_plan, library_versions
from pipelines.ports import Executor
from pipelines.select import select
from pipelines.spec import BuiltinData, FileData, Spec
from pipelines.stages import Context, cached
from tasks.base import Record, write_json
from tasks.text import builtin_corpus, load_file

log = logging.getLogger(__name__)
Progress = Callable[[str, Stage, Record | None], None]  # (event, stage, record)


def prepare_data(spec: Spec) -> tuple[list[str], list[int] | None, list[str]]:
    """Eval texts (+labels) and a calibration slice disjoint from them."""
    src = spec.data.eval
    if isinstance(src, BuiltinData):
        texts, labels = builtin_corpus(), None
        n = src.samples
    elif isinstance(src, FileData):
        ex = load_file(src.path, src.text_field, src.label_field)
        texts, labels, n = ex.texts, ex.labels, src.samples or len(ex.texts)
    else:
        from tasks.text import load_hub

        ex = load_hub(src.hf, src.config, src.split, src.text_field, src.label_field)
        texts, labels, n = ex.texts, ex.labels, src.samples or len(ex.texts)
    n_cal = spec.data.calibration.samples
    # Calibration comes from the end so that it stays disjoint from the eval head whenever possible.
    n = min(n, max(1, len(texts) - n_cal))
    calib = texts[n:][-n_cal:] or texts[:n_cal]
    return texts[:n], (labels[:n] if labels else None), calib


def data_digest(*parts: Any) -> str:
    """Hash of the texts and labels a run uses."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def environment(executor: Executor) -> dict[str, Any]:
    """The manifest's environment block."""
    import onnxruntime as ort

    from tasks.runtime import cuda_usable

    versions = library_versions()
    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        line = next((x for x in cpuinfo.read_text().splitlines() if x.startswith("flags")), "")
        wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
        flags = " ".join(f for f in line.split() if f in wanted)
    return {
        "python": platform.python_version(),
        "torch": versions.get("torch"),
        "transformers": versions.get("transformers"),
        "onnxruntime": versions.get("onnxruntime-gpu") or versions.get("onnxruntime"),
        "ray": _version("ray"),
        "mlflow": _version("mlflow"),
        "cpu_flags": flags,
        "providers": ort.get_available_providers(),
        "gpus": int(cuda_usable()),
        "executor": executor.describe(),
    }


def _version(pkg: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def execute(
    plan: Plan, ctx: Context, executor: Executor, *, max_in_flight: int = 8, progress: Progress | None = None
) -> dict[str, Record]:
    """Run every stage once its parent and needs are done; results are taken in completion order."""
    records: dict[str, Record] = {}
    for sid in plan.stages:
        done = cached(ctx, sid)
        if done is not None:
            records[sid] = {**done, "cached": True}
    pending = [sid for sid in plan.stages if sid not in records]
    in_flight: dict[Any, str] = {}
    try:
        while pending or in_flight:
            for sid in list(pending):
                if len(in_flight) >= max_in_flight:
                    break
                st = plan.stages[sid]
                deps = [d for d in [st.parent, *st.needs] if d]
                if not all(d in records for d in deps):
                    continue
                pending.remove(sid)
                bad = next(
                    (records[d] for d in deps if records[d].get("status") not in ("succeeded", None)), None
                )
                if bad is not None:  # a failed or skipped parent: its descendants cannot run
                    records[sid] = {"status": bad["status"], "reason": bad.get("reason"), "kind": st.kind}
                    continue
                if progress:
                    progress("start", st, None)
                in_flight[executor.submit(asdict(st), {d: records[d] for d in deps}, ctx)] = sid
            if not in_flight:
                if pending:  # nothing runnable and nothing running: unmet dependencies
                    for sid in pending:
                        records[sid] = {
                            "status": "failed",
                            "reason": "unmet dependency",
                            "kind": plan.stages[sid].kind,
                        }
                    pending.clear()
                continue
            handle, rec = executor.wait(list(in_flight))
            sid = in_flight.pop(handle)
            records[sid] = rec
            if progress:
                progress("done", plan.stages[sid], rec)
    except KeyboardInterrupt:
        executor.cancel(list(in_flight))
        for sid in [*in_flight.values(), *pending]:
            records[sid] = {"status": "failed", "reason": "interrupted", "kind": plan.stages[sid].kind}
        raise
    return records


def time_variants(
    graphs: dict[str, str], ctx: Context, executor: Executor, progress: Progress | None = None
) -> dict[str, Record]:
    """Latency of each graph, one at a time on a whole node, so nothing of ours runs beside it."""
    from pipelines.plan import stage_id

    out: dict[str, Record] = {}
    host = platform.node()
    for vid, path in graphs.items():
        sid = stage_id(
            None, "latency", {"graph": path, **ctx.latency}, {"host": host, "threads": ctx.threads}
        )
        st = Stage(sid, "latency", {}, "graph", f"latency {vid}")
        rec = cached(ctx, sid)
        if rec is None:
            if progress:
                progress("start", st, None)
            handle = executor.submit(asdict(st), {"graph": {"path": path}}, ctx, exclusive=True)
            rec = executor.wait([handle])[1]
        out[vid] = rec
    return out


def variant_rows(plan: Plan, records: dict[str, Record], latency: dict[str, Record]) -> list[dict[str, Any]]:
    """Manifest rows: status, reason and metrics for each variant, ratios to the baseline included."""
    rows = []
    base_lat = latency.get(plan.baseline, {})
    for v in plan.variants:
        row: dict[str, Any] = {
            "id": v.id,
            "label": v.label,
            "pruning": v.pruning,
            "quantization": v.quantization,
            "distillation": None,
            "status": v.status,
            "reason": v.reason,
            "metrics": {},
            "onnx": None,
        }
        if v.status != "skipped":
            chain = [records.get(s, {"status": "failed", "reason": "not run"}) for s in v.stages]
            bad = next((r for r in chain if r.get("status") not in ("succeeded", None)), None)
            last = chain[-1]
            if bad is not None:
                row.update(status=bad["status"], reason=bad.get("reason"))
            else:
                export_rec = next(records[s] for s in v.stages if s.startswith("export-"))
                lat = latency.get(v.id, {})
                m = {**last["metrics"], **{k: export_rec[k] for k in ("params", "flops") if k in export_rec}}
                m.update(
                    {
                        k: lat[k]
                        for k in ("latency_p50_ms", "latency_p95_ms", "latency_ci_ms", "throughput")
                        if k in lat
                    }
                )
                if "latency_p50_ms" in lat and "latency_p50_ms" in base_lat:
                    m["speedup_vs_baseline"] = base_lat["latency_p50_ms"] / lat["latency_p50_ms"]
                row.update(
                    metrics=m,
                    onnx=last["path"],
                    status="cached" if all(r.get("cached") for r in chain) else "succeeded",
                )
        rows.append(row)
    return rows


def run(
    spec: Spec,
    executor: Executor,
    *,
    threads: int = 1,
    progress: Progress | None = None,
    max_in_flight: int = 8,
) -> dict[str, Any]:
    """Run the whole sweep and write `<artifacts>/<run_id>/manifest.json`; returns the manifest."""
    from tasks.load import resolve_source

    resolve_source(spec.model.source)  # a missing model is bad input: fail before any work starts
    started = dt.datetime.now(dt.UTC)
    eval_texts, labels, calib = prepare_data(spec)
    digest = data_digest(eval_texts, labels, calib, spec.data.max_length)
    env = environment(executor)
    plan = build_plan(
        spec, digest, gpus_available=bool(env["gpus"]) or executor.describe().get("gpus", 0) > 0
    )
    root = Path(spec.artifacts).resolve()
    ctx = Context(
        root=str(root / "stages"),
        task=spec.model.task,
        eval_texts=eval_texts,
        calibration=calib,
        labels=labels,
        max_length=spec.data.max_length,
        eval_batch=spec.evaluate.batch_size,
        threads=threads,
        device="cuda" if spec.resources.gpus_per_task > 0 else "cpu",
        latency=spec.evaluate.latency.to_json(),
    )
    records = execute(plan, ctx, executor, max_in_flight=max_in_flight, progress=progress)
    graphs = {}
    for v in plan.variants:
        last = records.get(v.stages[-1], {}) if v.status != "skipped" else {}
        if last.get("status") == "succeeded":
            graphs[v.id] = last["path"]
    latency = time_variants(graphs, ctx, executor, progress)
    rows = variant_rows(plan, records, latency)
    selected, rejected = select([r for r in rows if r["id"] != plan.baseline], spec.select)
    base_row = next(r for r in rows if r["id"] == plan.baseline)
    ok = [r for r in rows if r["status"] in ("succeeded", "cached") and r["id"] != plan.baseline]
    status = (
        "failed"
        if base_row["status"] not in ("succeeded", "cached") or not ok
        else (
            "succeeded" if all(r["status"] in ("succeeded", "cached", "skipped") for r in rows) else "partial"
        )
    )
    ref = next((r for sid, r in records.items() if sid.startswith("reference-")), {})
    run_id = f"{spec.name}-{started.strftime('%Y%m%dT%H%M%SZ')}-{spec.digest()[:6]}"
    manifest = {
        "run_id": run_id,
        "spec_hash": spec.digest(),
        "status": status,
        "started": started.isoformat(),
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "environment": env,
        "baseline": {
            **base_row["metrics"],
            "variant": plan.baseline,
            "onnx_vs_torch_fidelity": ref.get("onnx_vs_torch_fidelity"),
        },
        "variants": rows,
        "selected": selected,
        "rejected": rejected,
        "registered": [],
    }
    run_dir = root / run_id
    write_json(run_dir / "manifest.json", manifest)
    return manifest
