"""KL divergence, rated-pair correlation and the human-rated data, checked against definitions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slimline.tasks import evaluate, export, metrics, rated
from slimline.tasks.base import TaskError
from slimline.tasks.metrics import Outputs
from slimline.tasks.text import load_file


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)


def _full_kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    lp, lq = _log_softmax(p_logits), _log_softmax(q_logits)
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean())


def _top(base: np.ndarray, other: np.ndarray, k: int) -> tuple[Outputs, Outputs]:
    lp, lq = _log_softmax(base), _log_softmax(other)
    ids = np.argsort(-lp, axis=-1)[:, :k]
    take = np.take_along_axis
    return (
        Outputs("causal-lm", lp.argmax(-1), top_ids=ids, top_logp=take(lp, ids, -1)),
        Outputs("causal-lm", lq.argmax(-1), top_ids=ids, top_logp=take(lq, ids, -1)),
    )


def test_kl_is_exact_with_every_token_and_a_lower_bound_with_the_top_k() -> None:
    rng = np.random.default_rng(0)
    p = rng.normal(scale=3.0, size=(50, 40))
    q = p + rng.normal(scale=1.0, size=p.shape)
    full = _full_kl(p, q)
    assert metrics.kl_divergence(*_top(p, q, 40)) == pytest.approx(full, rel=1e-9)
    head = metrics.kl_divergence(*_top(p, q, 8))
    assert 0 < head <= full
    assert metrics.kl_divergence(*_top(p, p, 8)) == pytest.approx(0.0, abs=1e-12)
    got = metrics.agreement(*_top(p, q, 8))
    assert got["kl_divergence"] == pytest.approx(head)
    assert got["top1_agreement"] == pytest.approx(float((p.argmax(-1) == q.argmax(-1)).mean()))


def test_sts_spearman_against_scipy() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    emb = rng.normal(size=(12, 6))
    pairs = [(i, j, float(rng.uniform())) for i in range(12) for j in range(i + 1, 12)]
    a, b = emb[[i for i, _, _ in pairs]], emb[[j for _, j, _ in pairs]]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    want = spearmanr(cos, [s for _, _, s in pairs])[0]
    assert metrics.sts_spearman(Outputs("feature-extraction", emb), pairs) == pytest.approx(want)


def test_causal_lm_outputs_carry_the_baseline_top_k(tiny_model, texts, tmp_path) -> None:
    """The baseline gathers its own top-k; a variant gathers its log-probs at exactly those ids,
    whatever the batching, so the same graph is at KL 0 from itself."""
    cfg = export.ExportConfig()
    graph = Path(export.apply(cfg, tiny_model("gpt2"), tmp_path / "o", task="causal-lm", texts=texts)["path"])
    base = evaluate.onnx_outputs(graph, texts[:6], batch_size=3, max_length=16)
    assert base.top_ids is not None and base.top_logp is not None
    assert base.top_ids.shape == (len(base.values), metrics.TOP_K)
    assert (base.top_logp.max(-1) <= 0).all() and (np.diff(np.sort(base.top_ids, -1), axis=-1) > 0).all()
    same = evaluate.onnx_outputs(graph, texts[:6], batch_size=2, max_length=16, probe=base.top_ids)
    np.testing.assert_array_equal(same.top_ids, base.top_ids)  # the probe, whatever the batching
    assert metrics.kl_divergence(base, same) == pytest.approx(0.0, abs=1e-5)


def test_rated_lee_and_movie_polarity_are_what_they_claim() -> None:
    lee = rated.lee_similarity()
    assert lee.pairs is not None and len(lee.pairs) == 50 * 49 // 2
    assert all(0 <= i < j < 50 and 0.0 <= s <= 1.0 for i, j, s in lee.pairs)
    assert len(lee.texts) == 350 and len(set(lee.texts)) > 340  # 50 rated + 300 background documents
    scores = np.array([s for _, _, s in lee.pairs])
    assert scores.std() > 0.05  # real ratings, not a constant
    mp = rated.movie_polarity()
    assert len(mp.texts) == 200 and mp.labels is not None
    assert sum(mp.labels) == 100 and mp.labels[:4] == [0, 1, 0, 1]
    assert not any(t.startswith("__label__") for t in mp.texts)


def test_rated_data_without_gensim_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(rated.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TaskError, match=r"pip install 'slimline\[eval-data\]'"):
        rated.lee_similarity()


def test_pair_files_make_one_text_per_sentence(tmp_path: Path) -> None:
    rows = [
        {"s1": "a cat sat", "s2": "a cat sits", "score": 4.5},
        {"s1": "a dog ran", "s2": "a cat sat", "score": "1.0"},
    ]
    path = tmp_path / "sts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    ex = load_file(path, "s1", pair_field="s2", score_field="score")
    assert ex.texts == ["a cat sat", "a cat sits", "a dog ran"]
    assert ex.pairs == [(0, 1, 4.5), (2, 0, 1.0)]
    path.write_text(json.dumps({"s1": "x", "s2": "y", "score": "high"}))
    with pytest.raises(TaskError, match=r"row 1: score 'high' is not a number"):
        load_file(path, "s1", pair_field="s2", score_field="score")
