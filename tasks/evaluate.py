"""Running a graph (or the torch baseline) over the eval texts, and timing graphs side by side.

Outputs are reduced per task as they are produced (`tasks.metrics` compares them): sentence
embeddings pooled and normalized as the model's own pipeline says (tasks.pipeline), class logits,
or next-token statistics at real positions. Texts are truncated at the model's maximum length.
Every variant is run on the same batches, so rows and token positions line up with the baseline's.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from pydantic import Field

from slimline.tasks.base import LAX, StepConfig, TaskError
from slimline.tasks.cpu_probe import peak_gops
from slimline.tasks.decode import OrtDecoder, prompt_ids
from slimline.tasks.graph import read_meta, tokenizer_of, with_past
from slimline.tasks.inputs import TaskWrapper, batches, encode, input_names, torch_forward
from slimline.tasks.metrics import TOP_K, Outputs
from slimline.tasks.pipeline import OutputPipeline, from_config, from_meta, usable_positions
from slimline.tasks.runtime import session

K = TypeVar("K", bound=Hashable)


class LatencyConfig(StepConfig):
    """How latency is measured: a fixed (batch, sequence) of real text, warm-up, then repeats."""

    method: Literal["latency"] = "latency"
    batch_size: int = Field(default=1, ge=1)
    sequence_length: int = Field(default=128, ge=2)
    warmup: int = Field(default=5, ge=0)
    repeats: int = Field(default=30, ge=3)
    threads: int | None = Field(default=None, ge=1)  # None: every CPU of the node that times
    # Graphs timed together are visited round-robin this many times, so drift hits them alike.
    rounds: int = Field(default=3, ge=1)
    # Decoding graphs (causal LMs with a KV cache) are also timed generating `decode_tokens` tokens
    # after a prompt of `decode_prompt` tokens, at each of `decode_batches`; the forward pass
    # above is then their prefill.
    decode_tokens: int = Field(default=64, ge=1)
    decode_prompt: int = Field(default=32, ge=1)
    decode_batches: Annotated[tuple[Annotated[int, Field(ge=1)], ...], LAX] = (1, 8)
    decode_repeats: int = Field(default=5, ge=3)
    # "real": also time every graph on batches of the eval texts as they come (drawn at random,
    # each padded to its own longest text, cut at sequence_length), as a server's batches are:
    # the row's real_* metrics, beside the fixed shape's.
    shape: Literal["fixed", "real"] = "fixed"
    later_fields: ClassVar = frozenset({"shape"})


@dataclass
class _NextToken:
    """Causal-LM outputs of one batch at positions where both t and t+1 are real tokens."""

    argmax: np.ndarray
    nll_sum: float
    top_ids: np.ndarray
    top_logp: np.ndarray


def _next_token(out: np.ndarray, mask: np.ndarray, ids: np.ndarray, probe: np.ndarray | None) -> _NextToken:
    """Position t predicts token t+1. `probe`: the baseline's top-k ids at these positions, whose
    log-probabilities are gathered; None gathers this model's own top-k (the baseline)."""
    valid = (mask[:, :-1] * mask[:, 1:]).astype(bool)
    logits = out[:, :-1][valid].astype(np.float32)  # real positions only: (tokens, vocabulary)
    top = logits.max(-1, keepdims=True)
    logz = top + np.log(np.exp(logits - top).sum(-1, keepdims=True, dtype=np.float64)).astype(np.float32)
    logp = logits - logz
    target = ids[:, 1:][valid]
    if probe is None:
        k = min(TOP_K, logp.shape[-1])
        probe = np.argpartition(-logp, k - 1, axis=-1)[:, :k]
    return _NextToken(
        logits.argmax(-1),
        float(-logp[np.arange(len(target)), target].sum()),
        probe,
        np.take_along_axis(logp, probe, -1).astype(np.float32),
    )


def _collect(
    task: str,
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    tokenizer: Any,
    names: list[str],
    texts: list[str],
    batch_size: int,
    max_length: int | None,
    pipeline: OutputPipeline,
    probe: np.ndarray | None = None,
) -> Outputs:
    parts: list[np.ndarray] = []
    steps: list[_NextToken] = []
    seen = 0
    for feed in batches(tokenizer, texts, batch_size, pipeline.length(max_length), names):
        out = run(feed).astype(np.float32)
        if not np.isfinite(out).all():  # NaN fidelity would compare as "not below the minimum"
            raise TaskError(f"non-finite outputs ({int((~np.isfinite(out)).sum())} values)")
        mask = feed["attention_mask"]
        if task == "feature-extraction":
            parts.append(pipeline.pool(out, mask))
        elif task == "text-classification":
            parts.append(out)
        else:
            n = int((mask[:, :-1] * mask[:, 1:]).sum())
            here = None if probe is None else probe[seen : seen + n]
            step = _next_token(out, mask, feed["input_ids"], here)
            steps.append(step)
            parts.append(step.argmax)
            seen += n
    values = np.concatenate(parts)
    if task != "causal-lm":
        return Outputs(task, values, multi_label=pipeline.multi_label)
    count = len(values)
    return Outputs(
        task,
        values,
        sum(s.nll_sum for s in steps) / count if count else None,
        np.concatenate([s.top_ids for s in steps]),
        np.concatenate([s.top_logp for s in steps]),
    )


def onnx_outputs(
    onnx_path: Path,
    texts: list[str],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    threads: int | None = None,
    device: str = "cpu",
    probe: np.ndarray | None = None,
) -> Outputs:
    """Run a slimline graph over `texts` and reduce its outputs for its task and its pipeline
    (`max_length`: capped at the model's maximum, which is the default; `probe`: see _next_token)."""
    meta = read_meta(onnx_path)
    sess = session(onnx_path, device=device, threads=threads)
    return _collect(
        meta["task"],
        lambda f: sess.run(None, with_past(f, meta))[0],
        tokenizer_of(onnx_path),
        meta["inputs"],
        texts,
        batch_size,
        max_length,
        from_meta(meta),
        probe,
    )


def torch_outputs(
    model: torch.nn.Module,
    tokenizer: Any,
    task: str,
    texts: list[str],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    pipeline: OutputPipeline | None = None,
) -> Outputs:
    """The same reduction for a PyTorch model (the fp32 baseline); `pipeline` defaults to the one
    its config carries (see tasks.pipeline), else mean pooling."""
    names = input_names(model, tokenizer)
    wrapped = TaskWrapper(model, task).eval()
    pipe = pipeline or from_config(model.config) or OutputPipeline(max_length=usable_positions(model.config))
    run = functools.partial(torch_forward, wrapped, names=names)
    return _collect(task, run, tokenizer, names, texts, batch_size, max_length, pipe)


def timing_stats(times_s: list[float], batch_size: int, seed: int = 0) -> dict[str, Any]:
    """p50/p95 in ms, a 95% bootstrap confidence interval of the median, and sequences per second."""
    t = np.asarray(times_s) * 1e3
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(t, size=(1000, len(t)), replace=True), axis=1)
    p50 = float(np.median(t))
    return {
        "latency_p50_ms": p50,
        "latency_p95_ms": float(np.percentile(t, 95)),
        "latency_ci_ms": [float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))],
        "throughput": batch_size / (p50 / 1e3),
        "repeats": len(t),
        # In the order they were taken: graphs timed together pair up sample by sample.
        "samples_ms": [round(float(x), 4) for x in t],
    }


def interleaved_times(
    calls: dict[K, Callable[[], object]], cfg: LatencyConfig, recache: bool = True
) -> dict[K, list[float]]:
    """Seconds per call of several callables measured side by side.

    Every callable is warmed up first; then `cfg.rounds` rounds visit them in turn (rotating
    the order), each visit timing its share of `cfg.repeats` after one unrecorded run. A slow
    spell on a noisy machine therefore lands on every callable rather than on one of them, which
    is what ratios to a baseline need. A callable that returns a float has timed itself (a
    decode loop after its untimed prefill): that float is the sample. Such calls warm their own
    caches, so they pass `recache=False` and skip the unrecorded run of each visit.
    """
    for call in calls.values():
        for _ in range(cfg.warmup):
            call()
    per_visit = -(-cfg.repeats // cfg.rounds)
    samples: dict[K, list[float]] = {k: [] for k in calls}
    keys = list(calls)
    for r in range(cfg.rounds):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            if recache:
                calls[key]()  # back in cache after the others ran
            for _ in range(per_visit):
                start = time.perf_counter()
                took = calls[key]()
                samples[key].append(took if isinstance(took, float) else time.perf_counter() - start)
    return samples


def onnx_call(
    onnx_path: Path, cfg: LatencyConfig, texts: list[str], *, device: str = "cpu", threads: int | None = None
) -> Callable[[], object]:
    """One inference of the graph on a real-text batch of exactly (batch_size, sequence_length)."""
    meta = read_meta(onnx_path)
    sess = session(onnx_path, device=device, threads=threads)
    feed = encode(tokenizer_of(onnx_path), texts, cfg.batch_size, cfg.sequence_length, meta["inputs"])
    return functools.partial(sess.run, None, with_past(feed, meta))


REAL_BATCHES = 8  # batches per timed pass at shape: real
# Ops whose products run on 8-bit integers: a graph with any is held to the CPU's int8 peak.
INT8_OPS = frozenset(
    {
        "MatMulInteger",
        "QLinearMatMul",
        "QAttention",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QuantizeLinear",
    }
)


def computes_int8(onnx_path: Path) -> bool:
    """Whether the graph's matrix products run in int8 (dynamic or static quantization)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return any(n.op_type in INT8_OPS for n in graph.node)


def real_feeds(
    tokenizer: Any, texts: list[str], cfg: LatencyConfig, names: list[str]
) -> list[dict[str, np.ndarray]]:
    """Up to REAL_BATCHES batches of `cfg.batch_size` texts drawn at random (seed 0, so every graph
    of a run gets the same ones), each padded to its own longest text, cut at `sequence_length`."""
    order = np.random.default_rng(0).permutation(len(texts))
    want = min(REAL_BATCHES * cfg.batch_size, max(len(texts), cfg.batch_size))
    chosen = [texts[order[i % len(texts)]] for i in range(want)]
    return list(batches(tokenizer, chosen, cfg.batch_size, cfg.sequence_length, names))


def real_call(
    onnx_path: Path, cfg: LatencyConfig, texts: list[str], *, device: str = "cpu", threads: int | None = None
) -> Callable[[], float]:
    """One pass over the real-shape batches of `texts`; returns the mean seconds per batch."""
    meta = read_meta(onnx_path)
    sess = session(onnx_path, device=device, threads=threads)
    feeds = [with_past(f, meta) for f in real_feeds(tokenizer_of(onnx_path), texts, cfg, meta["inputs"])]

    def run() -> float:
        start = time.perf_counter()
        for feed in feeds:
            sess.run(None, feed)
        return (time.perf_counter() - start) / len(feeds)

    return run


def decode_key(batch: int) -> str:
    """The metric name of decode throughput at `batch` (batch 1 is the plain name)."""
    return "decode_tokens_per_s" + ("" if batch == 1 else f"_b{batch}")


def _decode_calls(
    graphs: dict[str, Path], cfg: LatencyConfig, texts: list[str], device: str
) -> dict[tuple[str, int], Callable[[], float]]:
    calls: dict[tuple[str, int], Callable[[], float]] = {}
    for key, path in graphs.items():
        meta = read_meta(path)
        if not meta.get("kv_cache"):
            continue
        decoder = OrtDecoder(session(path, device=device, threads=cfg.threads), meta)
        for b in cfg.decode_batches:
            ids = prompt_ids(tokenizer_of(path), texts, b, cfg.decode_prompt)
            calls[key, b] = functools.partial(decoder.timed_decode, ids, cfg.decode_tokens)
    return calls


def _decode_stats(times_s: list[float], batch: int, tokens: int) -> dict[str, Any]:
    """Tokens per second from decode-loop times, with the 95% CI of the median turned into rates."""
    stats = timing_stats(times_s, batch)
    low_ms, high_ms = stats["latency_ci_ms"]
    name, n = decode_key(batch), batch * tokens
    return {
        name: n / (stats["latency_p50_ms"] / 1e3),
        f"{name}_ci": [n / (high_ms / 1e3), n / (low_ms / 1e3)],
    }


def _graph_files(onnx_path: Path) -> list[Path]:
    """What a graph folder runs from: every file but meta.json (which names the technique)."""
    return sorted(f for f in onnx_path.parent.iterdir() if f.is_file() and f.name != "meta.json")


def twins(graphs: dict[K, Path]) -> dict[K, K]:
    """Each graph's first byte-identical twin among `graphs` (itself when it has none).

    Two recipes can write the same graph (dynamic int8 with ORT's defaults is the `ort-default`
    peer, byte for byte). Timed twice, one copy of a graph comes out a few per cent faster than
    the other from memory placement alone; a twin is therefore timed once and shares the samples.
    Files are hashed only where sizes already match."""
    by_size: dict[tuple[tuple[str, int], ...], list[K]] = {}
    for key, path in graphs.items():
        sig = tuple((f.name, f.stat().st_size) for f in _graph_files(path))
        by_size.setdefault(sig, []).append(key)
    first: dict[K, K] = {k: k for k in graphs}
    for keys in (ks for ks in by_size.values() if len(ks) > 1):
        seen: dict[str, K] = {}
        for key in keys:
            h = hashlib.sha256()
            for f in _graph_files(graphs[key]):
                with f.open("rb") as fh:
                    for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        h.update(block)
            first[key] = seen.setdefault(h.hexdigest(), key)
    return first


def onnx_latency_many(
    graphs: dict[str, Path],
    cfg: LatencyConfig,
    texts: list[str],
    *,
    device: str = "cpu",
    real_texts: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Latency of several graphs measured side by side, on the same input batch (see interleaved_times).
    A graph byte-identical to another is timed once: it gets its twin's numbers and `same_graph_as`.

    At `shape: real` they are also timed side by side on batches of `real_texts` (default `texts`)
    as they come: `real_latency_p50_ms`, its CI and `real_throughput`.
    Decoding graphs also get decode throughput at each of `cfg.decode_batches`, their decode
    loops timed side by side too, and `prefill_ms` (their forward pass at the configured shape).
    """
    twin = twins(graphs)
    out = _latency_unique({k: p for k, p in graphs.items() if twin[k] == k}, cfg, texts, device, real_texts)
    return {k: out[k] if twin[k] == k else {**out[twin[k]], "same_graph_as": twin[k]} for k in graphs}


def _latency_unique(
    graphs: dict[str, Path], cfg: LatencyConfig, texts: list[str], device: str, real_texts: list[str] | None
) -> dict[str, dict[str, Any]]:
    calls = {k: onnx_call(p, cfg, texts, device=device, threads=cfg.threads) for k, p in graphs.items()}
    out = {k: timing_stats(v, cfg.batch_size) for k, v in interleaved_times(calls, cfg).items()}
    if device == "cpu":  # what each graph's kernels could do here: rows turn it into a share
        threads = cfg.threads or os.cpu_count() or 1
        for key, path in graphs.items():
            out[key]["shape"] = [cfg.batch_size, cfg.sequence_length]
            out[key]["peak_gops"] = peak_gops(threads, int8=computes_int8(path))
    if cfg.shape == "real":
        real = {
            k: real_call(p, cfg, real_texts or texts, device=device, threads=cfg.threads)
            for k, p in graphs.items()
        }
        for key, times in interleaved_times(real, cfg, recache=False).items():
            stats = timing_stats(times, cfg.batch_size)
            out[key].update(
                {f"real_{k}": stats[k] for k in ("latency_p50_ms", "latency_ci_ms", "throughput")}
            )
    decode = _decode_calls(graphs, cfg, texts, device)
    if decode:
        dcfg = cfg.model_copy(update={"warmup": 1, "repeats": cfg.decode_repeats})
        dcfg = dcfg.model_copy(update={"rounds": min(cfg.rounds, cfg.decode_repeats)})
        for (key, b), times in interleaved_times(decode, dcfg, recache=False).items():
            out[key].update(_decode_stats(times, b, cfg.decode_tokens), prefill_ms=out[key]["latency_p50_ms"])
    return out
