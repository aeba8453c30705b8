"""Run one stage of the plan: the glue between the plan and the pure `tasks` functions.

This is what an executor ships to a worker. It takes small records in and returns a small
record; every artifact lives under the artifact root, keyed by stage id. A stage whose record
file exists is finished: it is returned as cached without any work.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from slimline.pipelines.locks import single_flight
from slimline.pipelines.run.records import Status, failed, skipped
from slimline.tasks import decode, evaluate, export, load, metrics, optimize
from slimline.tasks import graph as graph_io
from slimline.tasks.base import Record, SkipVariant, TaskError, read_json_or_none, write_json
from slimline.tasks.catalog import make_config
from slimline.tasks.runtime import quiet_libraries, set_torch_threads
from slimline.tasks.stages import distill, prune, quantize


@dataclass
class Context:
    """Everything a stage needs besides its records: small, picklable, the same for every stage."""

    root: str  # <artifacts>/stages
    task: str
    eval_texts: list[str]
    calibration: list[str]
    labels: list[int] | None = None
    pairs: list[tuple[int, int, float]] | None = None  # (text i, text j, human rating) among eval_texts
    train_texts: list[str] = field(default_factory=list)  # distillation text, disjoint from eval_texts
    max_length: int = 128
    eval_batch: int = 16
    threads: int = 1
    device: str = "cpu"


def record_path(ctx: Context, sid: str) -> Path:
    """Where a finished stage's record lives (written last, so it marks completion)."""
    return Path(ctx.root) / f"{sid}.json"


def cached(ctx: Context, sid: str) -> Record | None:
    """The record of a finished stage, or None."""
    return read_json_or_none(record_path(ctx, sid), "stage record")


def run_stage(stage: dict[str, Any], inputs: dict[str, Record], ctx: Context) -> Record:
    """Execute one stage (or return its cached record). `inputs` maps parent/needed ids to records.

    Deterministic failures come back as records with status failed/skipped rather than as
    exceptions, so an executor only ever sees exceptions for system failures (which it may retry).
    """
    sid = stage["id"]
    done = cached(ctx, sid)
    if done is not None:
        return {**done, "cached": True}
    # Two runs of one spec at once compute each stage once: the second waits, then reads the first's.
    with single_flight(Path(ctx.root) / ".locks" / f"{sid}.lock", wait=True):
        done = cached(ctx, sid)
        if done is not None:
            return {**done, "cached": True}
        return _run(stage, inputs, ctx)


def _resume_from(candidates: list[str], cfg: Any, ctx: Context) -> Path | None:
    """The furthest finished earlier stop of this distillation whose checkpoint fits, if any."""
    from slimline.tasks.distillation.kd import resumable

    for sid in candidates:  # largest stop first
        rec = cached(ctx, sid)
        if rec is not None and rec.get("status", Status.SUCCEEDED) == Status.SUCCEEDED:
            folder = Path(rec["path"])
            if folder.is_dir() and resumable(folder, cfg) is not None:
                return folder
    return None


def _run(stage: dict[str, Any], inputs: dict[str, Record], ctx: Context) -> Record:
    sid, kind = stage["id"], stage["kind"]
    quiet_libraries()
    set_torch_threads(ctx.threads)
    out = Path(ctx.root) / sid
    parent = inputs.get(stage["parent"]) if stage["parent"] else None
    start, wall_start = time.perf_counter(), time.time()
    try:
        rec = _dispatch(kind, stage, parent, inputs, out, ctx)
        rec["status"] = Status.SUCCEEDED
    except SkipVariant as exc:
        return skipped(kind, str(exc))
    except TaskError as exc:
        return failed(kind, f"{kind}: {exc}")
    rec.update(kind=kind, seconds=time.perf_counter() - start, host=socket.gethostname(), pid=os.getpid())
    rec["interval"] = [wall_start, time.time()]  # epoch seconds: how busy the workers were
    write_json(record_path(ctx, sid), rec)
    return {**rec, "cached": False}


def _dispatch(
    kind: str,
    stage: dict[str, Any],
    parent: Record | None,
    inputs: dict[str, Record],
    out: Path,
    ctx: Context,
) -> Record:
    cfg = stage["config"]
    src = Path(parent["path"]) if parent else None
    if kind == "load":
        return load.apply(load.LoadConfig.model_validate(cfg), out)
    if kind == "latency":  # every finished graph at once, keyed by variant id (see pipelines.run)
        graphs = {vid: Path(rec["path"]) for vid, rec in inputs.items()}
        lat = evaluate.LatencyConfig.model_validate(cfg)
        texts = ctx.calibration or ctx.eval_texts
        return {"latency": evaluate.onnx_latency_many(graphs, lat, texts, device=ctx.device)}
    assert src is not None  # every other stage has a parent
    # Techniques that read calibration text get it (their `needs_calibration` decides).
    text = {"calibration": ctx.calibration, "max_length": ctx.max_length}
    if kind == "prune":
        return prune.apply(make_config(cfg, "prune"), src, out, task=ctx.task, **text)
    if kind == "distill":
        kd = make_config(cfg, "distill")
        return distill.apply(
            kd,
            src,
            Path(inputs[stage["needs"][0]]["path"]),  # the teacher: the loaded base model
            out,
            task=ctx.task,
            texts=ctx.train_texts,
            max_length=ctx.max_length,
            device=ctx.device,
            resume_from=_resume_from(stage.get("resume") or [], kd, ctx),
        )
    if kind == "export":
        return export.apply(
            export.ExportConfig.model_validate(cfg), src, out, task=ctx.task, texts=ctx.calibration
        )
    if kind == "optimize":
        return optimize.apply(optimize.OptimizeConfig.model_validate(cfg), src, out, texts=ctx.calibration)
    if kind == "quantize":
        return quantize.apply(make_config(cfg, "quantize"), src, out, device=ctx.device, **text)
    if kind == "reference":
        return _reference(src, inputs[stage["needs"][0]], out, ctx)
    if kind == "evaluate":
        return _evaluate(src, inputs[stage["needs"][0]], ctx)
    raise TaskError(f"unknown stage kind {kind!r}")


def _outputs(path: Path, ctx: Context, probe: np.ndarray | None = None) -> metrics.Outputs:
    return evaluate.onnx_outputs(
        path,
        ctx.eval_texts,
        batch_size=ctx.eval_batch,
        max_length=ctx.max_length,
        threads=ctx.threads,
        device=ctx.device,
        probe=probe,
    )


def _task_metrics(out: metrics.Outputs, ctx: Context) -> dict[str, float]:
    """Metrics against the eval data's own labels: the baseline's are what variants' deltas use."""
    got: dict[str, float] = {}
    if ctx.labels is not None and ctx.task == "text-classification":
        got["accuracy"] = metrics.accuracy(out, ctx.labels)
    if ctx.pairs and ctx.task == "feature-extraction":
        got["sts_spearman"] = metrics.sts_spearman(out, ctx.pairs)
    if ctx.task == "causal-lm" and (ppl := metrics.perplexity(out)) is not None:
        got["perplexity"] = ppl
    return got


def _reference(graph: Path, base: Record, out: Path, ctx: Context) -> Record:
    """Baseline outputs on the eval set: ONNX fp32 (what variants are judged against) and torch fp32."""
    onnx_out = _outputs(graph, ctx)
    model = load.load_pretrained(base["path"], ctx.task)
    torch_out = evaluate.torch_outputs(
        model,
        load.load_tokenizer(base["path"]),
        ctx.task,
        ctx.eval_texts,
        batch_size=ctx.eval_batch,
        max_length=ctx.max_length,
    )
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "reference.npy", onnx_out.values)
    rec = {
        "path": str(graph),
        "reference": str(out / "reference.npy"),
        "nll": onnx_out.nll,
        "onnx_vs_torch_fidelity": metrics.fidelity(torch_out, onnx_out),
        "task_metrics": _task_metrics(onnx_out, ctx),
    }
    if onnx_out.top_ids is not None and onnx_out.top_logp is not None:  # causal-lm: KL's reference
        np.save(out / "top_ids.npy", onnx_out.top_ids)
        np.save(out / "top_logp.npy", onnx_out.top_logp)
        rec["top"] = [str(out / "top_ids.npy"), str(out / "top_logp.npy")]
    if graph_io.read_meta(graph).get("kv_cache"):  # decoding graphs: the greedy tokens to agree with
        generated = _generate(graph, ctx)
        np.save(out / "generated.npy", generated)
        rec["generated"] = str(out / "generated.npy")
        ids = _gen_prompts(graph, ctx)
        rec["onnx_vs_torch_generation_agreement"] = decode.generation_agreement(
            generated, decode.torch_greedy(model, ids, decode.GEN_TOKENS)
        )
    return rec


def _gen_prompts(graph: Path, ctx: Context) -> np.ndarray:
    """The fixed prompts of the generation-agreement metric: the first tokens of eval texts."""
    tok = graph_io.tokenizer_of(graph)
    return decode.prompt_ids(tok, ctx.eval_texts, decode.GEN_PROMPTS, decode.GEN_PROMPT_TOKENS)


def _generate(graph: Path, ctx: Context) -> np.ndarray:
    """Greedy tokens of a decoding graph, with its KV cache, from the fixed prompts."""
    from slimline.tasks.runtime import session

    sess = session(graph, device=ctx.device, threads=ctx.threads)
    decoder = decode.OrtDecoder(sess, graph_io.read_meta(graph))
    return decoder.greedy(_gen_prompts(graph, ctx), decode.GEN_TOKENS)


def _evaluate(graph: Path, ref: Record, ctx: Context) -> Record:
    """Quality metrics of one variant against the baseline reference (latency is timed separately)."""
    top = [np.load(p) for p in ref["top"]] if ref.get("top") else [None, None]
    got = _outputs(graph, ctx, probe=top[0])
    base = metrics.Outputs(ctx.task, np.load(ref["reference"]), ref.get("nll"), *top)
    meta = graph_io.read_meta(graph)
    found: dict[str, Any] = {
        "fidelity": metrics.fidelity(base, got),
        **metrics.agreement(base, got),
        "size_mb": graph_io.onnx_size_bytes(graph) / 1e6,
    }
    if ref.get("generated") and meta.get("kv_cache"):
        reference = np.load(ref["generated"])
        found["generation_agreement"] = decode.generation_agreement(reference, _generate(graph, ctx))
    for name, value in _task_metrics(got, ctx).items():
        found[name] = value
        found[f"{name}_delta"] = value - ref["task_metrics"][name]  # variant minus baseline
    bad = sorted(k for k, v in found.items() if v is not None and not math.isfinite(v))
    if bad:
        raise TaskError(f"non-finite metrics: {', '.join(bad)}")
    return {"path": str(graph), "metrics": found, "exporter": meta.get("exporter")}
