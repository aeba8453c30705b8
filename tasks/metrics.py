"""Quality metrics of a variant's outputs against the baseline's (docs/guide/metrics.md).

Every function takes task-reduced `Outputs` of the same eval texts in the same order, so rows
and token positions line up between the baseline and a variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimline.tasks.graph import row_cosines

# How many of the baseline's most likely next tokens KL divergence is computed over (see kl_divergence).
TOP_K = 64


@dataclass
class Outputs:
    """Task-reduced outputs of one model over an evaluation set."""

    task: str
    values: np.ndarray  # pooled embeddings, class logits, or next-token ids at real positions
    nll: float | None = None  # mean next-token negative log-likelihood (causal-lm)
    # causal-lm, per real position: the baseline's TOP_K most likely next-token ids, and this
    # model's log-probabilities of exactly those ids (for the baseline, its own top-k).
    top_ids: np.ndarray | None = None
    top_logp: np.ndarray | None = None
    multi_label: bool = False  # text-classification: independent per-label decisions (sigmoid)


def fidelity(base: Outputs, other: Outputs) -> float:
    """Agreement with the baseline in [0, 1]: mean cosine of the model's sentence embeddings
    (feature-extraction), top-1 agreement (text-classification; a multi-label classifier: the share
    of per-label decisions, sigmoid above one half, that agree), top-1 next-token agreement (causal-lm)."""
    a, b = base.values, other.values
    if a.shape != b.shape:
        raise ValueError(f"outputs differ in shape: {a.shape} vs {b.shape}")
    if base.task == "feature-extraction":
        return float(row_cosines(a, b).mean())
    if base.task == "text-classification" and base.multi_label:
        return float(((a > 0) == (b > 0)).mean())  # sigmoid(x) > 1/2 exactly when x > 0
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


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation; 1.0 when either side is constant or has fewer than 2 values."""
    if len(a) < 2:
        return 1.0
    ra, rb = _ranks(np.asarray(a)), _ranks(np.asarray(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if ra.std() and rb.std() else 1.0


def similarity_spearman(base: Outputs, other: Outputs) -> float:
    """Spearman correlation of every pairwise cosine similarity of the eval texts, baseline vs
    variant: is the similarity order that ranking and clustering use preserved?"""
    upper = np.triu_indices(len(base.values), k=1)
    return spearman(_cosine_matrix(base.values)[upper], _cosine_matrix(other.values)[upper])


def kl_divergence(base: Outputs, other: Outputs) -> float:
    """Mean per-token KL(baseline ‖ variant) in nats over the next-token distributions.

    Computed over the baseline's TOP_K most likely tokens plus one bucket holding the rest of the
    probability mass of each side. Merging outcomes never increases KL, so this is a lower bound
    of the full-vocabulary KL that is exact up to the mass outside the top-k (which is what lets
    the baseline's reference stay a few MB instead of tokens × vocabulary).
    """
    assert base.top_logp is not None and other.top_logp is not None, "causal-lm outputs with top-k"
    p_log, q_log = base.top_logp.astype(np.float64), other.top_logp.astype(np.float64)
    p, q = np.exp(p_log), np.exp(q_log)
    p_rest = np.clip(1.0 - p.sum(-1), 0.0, 1.0)
    q_rest = np.clip(1.0 - q.sum(-1), 1e-12, 1.0)
    head = (p * (p_log - q_log)).sum(-1)
    tail = np.where(p_rest > 0, p_rest * (np.log(np.maximum(p_rest, 1e-300)) - np.log(q_rest)), 0.0)
    return float(np.maximum(head + tail, 0.0).mean())


def agreement(base: Outputs, other: Outputs) -> dict[str, float]:
    """What practitioners judge a compressed model by, per task, beside fidelity."""
    if base.task == "feature-extraction":
        return {
            "neighbour_agreement": neighbour_agreement(base, other),
            "similarity_spearman": similarity_spearman(base, other),
        }
    if base.task == "text-classification":
        return {"flip_rate": 1.0 - fidelity(base, other)}
    return {"top1_agreement": fidelity(base, other), "kl_divergence": kl_divergence(base, other)}


def accuracy(out: Outputs, labels: list[int]) -> float:
    """Top-1 accuracy of classification logits against labels."""
    return float((out.values.argmax(-1) == np.asarray(labels)).mean())


def perplexity(out: Outputs) -> float | None:
    """exp(mean next-token NLL), for causal LMs."""
    return float(np.exp(out.nll)) if out.nll is not None else None


def sts_spearman(out: Outputs, pairs: list[tuple[int, int, float]]) -> float:
    """Spearman correlation between the cosine similarity of each rated pair of eval texts and
    its human rating: how well the embeddings order pairs the way people do."""
    x = out.values.astype(np.float64)
    a = x[[i for i, _, _ in pairs]]
    b = x[[j for _, j, _ in pairs]]
    return spearman(row_cosines(a, b), np.array([s for _, _, s in pairs]))
