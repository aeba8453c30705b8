"""Evaluation of a graph against the baseline: fidelity, accuracy/perplexity, latency.

Fidelity is the task's agreement with the baseline, in [0, 1]: mean cosine of mean-pooled
embeddings (feature-extraction), top-1 agreement (text-classification), top-1 next-token
agreement (causal-lm). Every variant is run on the same batches, so positions line up.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from .base import StepConfig, TaskError
from .graph import read_meta, row_cosines, tokenizer_of
from .inputs import TaskWrapper, batches, encode, input_names, torch_forward
from .runtime import session


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


@dataclass
class Outputs:
    """Task-reduced outputs of one model over an evaluation set."""

    task: str
    values: np.ndarray  # pooled embeddings, class logits, or next-token ids at real positions
    nll: float | None = None  # mean next-token negative log-likelihood (causal-lm)


def _reduce(task: str, out: np.ndarray, mask: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Reduce one batch of raw outputs; returns (values, summed NLL, NLL token count)."""
    if task == "feature-extraction":
        m = mask[..., None].astype(np.float64)
        return (out * m).sum(1) / np.maximum(m.sum(1), 1e-9), 0.0, 0
    if task == "text-classification":
        return out, 0.0, 0
    # causal-lm: position t predicts token t+1; only pairs where both are real tokens count.
    logits = out[:, :-1].astype(np.float64)
    valid = (mask[:, :-1] * mask[:, 1:]).astype(bool)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    target = np.take_along_axis(logits, ids[:, 1:, None], -1)[..., 0]
    return logits.argmax(-1)[valid], float((logz - target)[valid].sum()), int(valid.sum())


def _collect(
    task: str,
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    tokenizer: Any,
    names: list[str],
    texts: list[str],
    batch_size: int,
    max_length: int,
) -> Outputs:
    parts, nll, count = [], 0.0, 0
    for feed in batches(tokenizer, texts, batch_size, max_length, names):
        out = run(feed).astype(np.float32)
        if not np.isfinite(out).all():  # NaN fidelity would compare as "not below the minimum"
            raise TaskError(f"non-finite outputs ({int((~np.isfinite(out)).sum())} values)")
        values, s, c = _reduce(task, out, feed["attention_mask"], feed["input_ids"])
        parts.append(values)
        nll, count = nll + s, count + c
    return Outputs(task, np.concatenate(parts), nll / count if count else None)


def onnx_outputs(
    onnx_path: Path,
    texts: list[str],
    *,
    batch_size: int = 16,
    max_length: int = 128,
    threads: int | None = None,
    device: str = "cpu",
) -> Outputs:
    """Run a slimline graph over `texts` and reduce its outputs for its task."""
    meta = read_meta(onnx_path)
    sess = session(onnx_path, device=device, threads=threads)
    return _collect(
        meta["task"],
        lambda f: sess.run(None, f)[0],
        tokenizer_of(onnx_path),
        meta["inputs"],
        texts,
        batch_size,
        max_length,
    )


def torch_outputs(
    model: torch.nn.Module,
    tokenizer: Any,
    task: str,
    texts: list[str],
    *,
    batch_size: int = 16,
    max_length: int = 128,
) -> Outputs:
    """The same reduction for a PyTorch model (the fp32 baseline)."""
    names = input_names(model, tokenizer)
    wrapped = TaskWrapper(model, task).eval()
    return _collect(
        task, lambda f: torch_forward(wrapped, f, names), tokenizer, names, texts, batch_size, max_length
    )


def fidelity(base: Outputs, other: Outputs) -> float:
    """Agreement of `other` with the baseline, in [0, 1] (definition per task in the module doc)."""
    a, b = base.values, other.values
    if a.shape != b.shape:
        raise ValueError(f"outputs differ in shape: {a.shape} vs {b.shape}")
    if base.task == "feature-extraction":
        return float(row_cosines(a, b).mean())
    if base.task == "text-classification":
        return float((a.argmax(-1) == b.argmax(-1)).mean())
    return float((a == b).mean())


def _cosine_matrix(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
    return x @ x.T


def neighbour_agreement(base: Outputs, other: Outputs, k: int = 10) -> float:
    """Mean overlap, over the eval texts, of each text's k nearest neighbours (cosine, itself
    excluded) under the baseline and under the variant: do searches return the same texts?"""
    n = len(base.values)
    k = min(k, n - 1)
    if k < 1:
        return 1.0
    overlaps = []
    rows = zip(_cosine_matrix(base.values), _cosine_matrix(other.values), strict=True)
    for i, sims in enumerate(rows):
        top = [set(np.argsort(-np.where(np.arange(n) == i, -np.inf, s), kind="stable")[:k]) for s in sims]
        overlaps.append(len(top[0] & top[1]) / k)
    return float(np.mean(overlaps))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their mean rank (what Spearman's correlation is defined on)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def similarity_spearman(base: Outputs, other: Outputs) -> float:
    """Spearman correlation of every pairwise cosine similarity of the eval texts, baseline vs
    variant: is the similarity order that ranking and clustering use preserved?"""
    upper = np.triu_indices(len(base.values), k=1)
    a, b = _cosine_matrix(base.values)[upper], _cosine_matrix(other.values)[upper]
    if len(a) < 2:
        return 1.0
    ra, rb = _ranks(a), _ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1]) if ra.std() and rb.std() else 1.0


def agreement(base: Outputs, other: Outputs) -> dict[str, float]:
    """What practitioners judge a compressed model by, per task, beside fidelity (README: Metrics)."""
    if base.task == "feature-extraction":
        return {
            "neighbour_agreement": neighbour_agreement(base, other),
            "similarity_spearman": similarity_spearman(base, other),
        }
    if base.task == "text-classification":
        return {"flip_rate": 1.0 - fidelity(base, other)}
    return {}


def accuracy(out: Outputs, labels: list[int]) -> float:
    """Top-1 accuracy of classification logits against labels."""
    return float((out.values.argmax(-1) == np.asarray(labels)).mean())


def perplexity(out: Outputs) -> float | None:
    """exp(mean next-token NLL), for causal LMs."""
    return float(np.exp(out.nll)) if out.nll is not None else None


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


def interleaved_times(calls: dict[str, Callable[[], object]], cfg: LatencyConfig) -> dict[str, list[float]]:
    """Seconds per call of several callables measured side by side.

    Every callable is warmed up first; then `cfg.rounds` rounds visit them in turn (rotating
    the order), each visit timing its share of `cfg.repeats` after one unrecorded run. A slow
    spell on a noisy machine therefore lands on every callable rather than on one of them, which
    is what ratios to a baseline need.
    """
    for call in calls.values():
        for _ in range(cfg.warmup):
            call()
    per_visit = -(-cfg.repeats // cfg.rounds)
    samples: dict[str, list[float]] = {k: [] for k in calls}
    keys = list(calls)
    for r in range(cfg.rounds):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            calls[key]()  # back in cache after the others ran
            for _ in range(per_visit):
                start = time.perf_counter()
                calls[key]()
                samples[key].append(time.perf_counter() - start)
    return samples


def onnx_call(
    onnx_path: Path, cfg: LatencyConfig, texts: list[str], *, device: str = "cpu", threads: int | None = None
) -> Callable[[], object]:
    """One inference of the graph on a real-text batch of exactly (batch_size, sequence_length)."""
    meta = read_meta(onnx_path)
    sess = session(onnx_path, device=device, threads=threads)
    feed = encode(tokenizer_of(onnx_path), texts, cfg.batch_size, cfg.sequence_length, meta["inputs"])
    return functools.partial(sess.run, None, feed)


def onnx_latency_many(
    graphs: dict[str, Path], cfg: LatencyConfig, texts: list[str], *, device: str = "cpu"
) -> dict[str, dict[str, Any]]:
    """Latency of several graphs measured side by side, on the same input batch (see interleaved_times)."""
    calls = {k: onnx_call(p, cfg, texts, device=device, threads=cfg.threads) for k, p in graphs.items()}
    return {k: timing_stats(v, cfg.batch_size) for k, v in interleaved_times(calls, cfg).items()}
