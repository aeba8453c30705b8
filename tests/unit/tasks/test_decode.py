"""The pure parts of decoding: prompts cut from real text, the agreement metric, self-timed calls."""

from __future__ import annotations

import numpy as np
import pytest

from slimline.tasks import decode, evaluate
from slimline.tasks.graph import empty_past, past_names, with_past
from slimline.tasks.load import load_tokenizer


def test_prompts_are_consecutive_pieces_of_the_token_stream(minilm_path, texts) -> None:
    tok = load_tokenizer(str(minilm_path))
    ids = decode.prompt_ids(tok, texts, 4, 16)
    stream = [t for text in texts[:40] for t in tok(text, add_special_tokens=False)["input_ids"]]
    assert ids.shape == (4, 16) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids.reshape(-1), stream[:64])
    short = decode.prompt_ids(tok, ["one two"], 3, 5)  # a short corpus is cycled, never padded
    assert short.shape == (3, 5) and (short != tok.pad_token_id).all()


def test_generation_agreement_counts_equal_positions() -> None:
    ref = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert decode.generation_agreement(ref, ref) == 1.0
    assert decode.generation_agreement(ref, np.array([[1, 2, 0, 4], [0, 0, 0, 8]])) == pytest.approx(4 / 8)


def test_empty_cache_has_zero_length_per_layer() -> None:
    meta = {"kv_cache": {"layers": 2, "kv_heads": 3, "head_dim": 16}}
    assert past_names(meta) == [f"past_key_values.{i}.{k}" for i in range(2) for k in ("key", "value")]
    feed = with_past({"input_ids": np.zeros((5, 7), np.int64)}, meta)
    assert {v.shape for k, v in feed.items() if k.startswith("past")} == {(5, 3, 0, 16)}
    assert empty_past({"task": "causal-lm"}, 5) == {}  # a single-forward graph takes no cache


def test_self_timed_calls_report_their_own_seconds() -> None:
    cfg = evaluate.LatencyConfig(warmup=0, repeats=4, rounds=2)
    samples = evaluate.interleaved_times({"a": lambda: 0.25, ("b", 8): lambda: None}, cfg)
    assert samples["a"] == [0.25] * 4
    assert len(samples["b", 8]) == 4 and all(0 <= s < 0.25 for s in samples["b", 8])
