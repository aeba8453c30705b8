"""Manifest rows from a plan and its stage records: environment, variant rows with ratios, overall status."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict
from typing import Any

from slimline.pipelines.plan.plan import Plan, Variant, library_versions
from slimline.pipelines.ports import ExecutorInfo
from slimline.pipelines.run.records import DONE, RunStatus, Status, failed, succeeded
from slimline.tasks.base import Record, package_version
from slimline.tasks.cpu_probe import cpu_flags, cpu_model

# The length an export record's `flops` counts at: tasks.profile.ProfileConfig's default (a literal
# here: that module imports torch, which a manifest's rows do not need).
PROFILE_LENGTH = 128
LATENCY_KEYS = ("latency_p50_ms", "latency_p95_ms", "latency_ci_ms", "throughput", "prefill_ms")
# At evaluate.latency.shape: real, the same graphs on batches of the eval texts as they come.
REAL_KEYS = ("real_latency_p50_ms", "real_latency_ci_ms", "real_throughput")
# Decoding graphs: tokens per second at batch 1 and 8 (see tasks.evaluate.decode_key), with CIs.
DECODE_KEYS = tuple(f"decode_tokens_per_s{b}{ci}" for b in ("", "_b8") for ci in ("", "_ci"))
# What a variant row keeps of its distill stage: the loss curve and where and how long it trained.
DISTILL_KEYS = (
    "loss_start",
    "loss_end",
    "loss_curve",
    "steps",
    "schedule_steps",  # the schedule's length: more than `steps` when a search stopped it early
    "resumed_from_step",  # continued from an earlier stop's checkpoint (a search's lower rung)
    "train_texts",
    "device",
    "train_seconds",
)


def environment(executor_info: ExecutorInfo) -> dict[str, Any]:
    """The manifest's environment block."""
    from slimline.tasks.runtime import cuda_usable, providers_for

    versions = library_versions()
    return {
        "python": platform.python_version(),
        "torch": versions.get("torch"),
        "transformers": versions.get("transformers"),
        "onnxruntime": versions.get("onnxruntime-gpu") or versions.get("onnxruntime"),
        "ray": package_version("ray"),
        "mlflow": package_version("mlflow"),
        "slimline": versions.get("slimline"),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        # What slimline runs with here, not everything the installed ORT build lists.
        "providers": providers_for("cuda" if cuda_usable() else "cpu"),
        "gpus": max(int(cuda_usable()), int(executor_info.gpus)),
        "executor": asdict(executor_info),
    }


def _closure(plan: Plan, chain: list[str]) -> list[str]:
    """The chain's stage ids and every stage they read (the reference a evaluate needs, the base
    model a distillation learns from), in plan order."""
    seen: set[str] = set()
    todo = list(chain)
    while todo:
        sid = todo.pop()
        if sid in seen or sid not in plan.stages:
            continue
        seen.add(sid)
        st = plan.stages[sid]
        todo += [d for d in [st.parent, *st.needs] if d]
    return [sid for sid in plan.stages if sid in seen]


def _row(plan: Plan, v: Variant, records: dict[str, Record], latency: dict[str, Record]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": v.id,
        "label": v.label,
        "pruning": v.pruning,
        "quantization": v.quantization,
        "distillation": {"config": v.distillation} if v.distillation else None,
        "status": v.status,
        "reason": v.reason,
        "metrics": {},
        "onnx": None,
        "stages": _closure(plan, v.stages),  # what `slimline gc` must keep for this variant
    }
    if v.peer:
        row["peer"] = v.peer
    if v.status == Status.SKIPPED:
        return row
    chain = [records.get(s) or failed(plan.stages[s].kind, "not run") for s in v.stages]
    bad = next((r for r in chain if not succeeded(r)), None)
    if bad is not None:
        row.update(status=bad["status"], reason=bad.get("reason"))
        return row
    export_rec = records[x] if (x := plan.stage_of(v, "export")) else {}
    lat = latency.get(v.id, {})
    base_lat = latency.get(plan.baseline, {})
    m = {**chain[-1]["metrics"], **{k: export_rec[k] for k in ("params", "flops") if k in export_rec}}
    m.update({k: lat[k] for k in (*LATENCY_KEYS, *REAL_KEYS, *DECODE_KEYS) if k in lat})
    for prefix in ("", "real_"):
        if f"{prefix}latency_p50_ms" in lat and f"{prefix}latency_p50_ms" in base_lat:
            m[f"{prefix}speedup_vs_baseline"] = (
                base_lat[f"{prefix}latency_p50_ms"] / lat[f"{prefix}latency_p50_ms"]
            )
    m.update(_efficiency(export_rec, lat))
    # Latency is timed afresh in every run, so "cached" speaks of the compute stages only.
    status = Status.CACHED if all(r.get("cached") for r in chain) else Status.SUCCEEDED
    if lat and not succeeded(lat):
        status, row["reason"] = Status.FAILED, lat.get("reason")
    row.update(metrics=m, onnx=chain[-1]["path"], status=status)
    if lat.get("same_graph_as"):  # byte-identical to that variant's graph: timed once, for both
        row["same_graph_as"] = lat["same_graph_as"]
    quant = records[q] if (q := plan.stage_of(v, "quantize")) else {}
    if quant.get("sensitivity"):  # mixed precision chosen by sensitivity: the table and the choice
        row["sensitivity"], row["excluded"] = quant["sensitivity"], quant.get("excluded", [])
    kd = records[d] if (d := plan.stage_of(v, "distill")) else None
    if kd is not None:
        row["distillation"] = {"config": v.distillation, **{k: kd.get(k) for k in DISTILL_KEYS}}
    return row


def _efficiency(export_rec: Record, lat: Record) -> dict[str, float]:
    """Achieved G operations/s of the transformer blocks at the timed shape, and its share of the
    CPU's peak for the graph's arithmetic (int8 or fp32, as the latency stage saw it)."""
    if not {"shape", "peak_gops", "latency_p50_ms"} <= lat.keys():
        return {}
    batch, seq = lat["shape"]
    if "flops_terms" in export_rec:
        per_token, per_pair = export_rec["flops_terms"]
        flops = per_token * seq + per_pair * seq**2
    elif "flops" in export_rec and seq == PROFILE_LENGTH:  # an export made before the terms were kept
        flops = export_rec["flops"]
    else:
        return {}
    gops = batch * flops / (lat["latency_p50_ms"] / 1e3) / 1e9
    return {"gops": gops, "peak_fraction": gops / lat["peak_gops"]}


def variant_rows(plan: Plan, records: dict[str, Record], latency: dict[str, Record]) -> list[dict[str, Any]]:
    """Manifest rows: status, reason and metrics for each variant, ratios to the baseline included."""
    return [_row(plan, v, records, latency) for v in plan.variants]


def overall_status(rows: list[dict[str, Any]], baseline: str) -> str:
    """succeeded: everything ran; partial: some variants failed; failed: no baseline or no variant."""
    base = next(r for r in rows if r["id"] == baseline)
    ok = [r for r in rows if r["status"] in DONE and r["id"] != baseline]
    if base["status"] not in DONE or not ok:
        return RunStatus.FAILED
    return (
        RunStatus.SUCCEEDED
        if all(r["status"] in (*DONE, Status.SKIPPED) for r in rows)
        else RunStatus.PARTIAL
    )
