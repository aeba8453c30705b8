"""Token-by-token decoding with a KV cache: greedy generation and decode timing, ORT and torch.

A decoding graph (tasks.kv_export) takes the past keys and values of every layer and returns
them grown by the new tokens, so each step feeds one token per sequence and never recomputes
the prefix. Prompts here are equal-length rows of real text, so no row needs padding.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from slimline.tasks.base import Record
from slimline.tasks.graph import PAST, PRESENT, empty_past, past_names

GEN_PROMPTS = 8  # prompts of the generation-agreement metric
GEN_PROMPT_TOKENS = 16
GEN_TOKENS = 32  # the first 32 greedy tokens of each prompt are compared


def prompt_ids(tokenizer: Any, texts: list[str], count: int, length: int) -> np.ndarray:
    """(count, length) token ids of real text: consecutive pieces of the texts' token stream.

    Equal lengths mean batch rows need no padding, so batch-8 decoding does the same work per
    row as batch 1; a short corpus is cycled.
    """
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(stream) >= count * length:
            break
    if not stream:
        raise ValueError("no text to build decoding prompts from")
    while len(stream) < count * length:
        stream += stream
    return np.asarray(stream[: count * length], dtype=np.int64).reshape(count, length)


class OrtDecoder:
    """Greedy decoding with an ONNX Runtime session of a decoding graph."""

    def __init__(self, sess: Any, meta: Record) -> None:
        self.sess, self.meta = sess, meta
        self.past = past_names(meta)
        # present.<i>.<key|value> is past_key_values.<i>.<key|value> one step on
        self.outputs = ["logits", *(n.replace(PAST.split("{")[0], PRESENT.split("{")[0]) for n in self.past)]

    def _step(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        logits, *presents = self.sess.run(self.outputs, feed)
        return logits[:, -1].argmax(-1).astype(np.int64), dict(zip(self.past, presents, strict=True))

    def prefill(self, ids: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Read the prompt: (first new token per row, the cache, the attention mask)."""
        mask = np.ones_like(ids)
        nxt, cache = self._step({"input_ids": ids, "attention_mask": mask, **empty_past(self.meta, len(ids))})
        return nxt, cache, mask

    def decode(
        self, nxt: np.ndarray, cache: dict[str, np.ndarray], mask: np.ndarray, steps: int
    ) -> np.ndarray:
        """`steps` more greedy tokens after `nxt`, each step one token per row with the cache."""
        out = []
        for _ in range(steps):
            mask = np.concatenate([mask, np.ones((len(mask), 1), np.int64)], axis=1)
            nxt, cache = self._step({"input_ids": nxt[:, None], "attention_mask": mask, **cache})
            out.append(nxt)
        return np.stack(out, axis=1) if out else np.zeros((len(mask), 0), np.int64)

    def greedy(self, ids: np.ndarray, new_tokens: int) -> np.ndarray:
        """(rows, new_tokens) greedy continuation of `ids`."""
        nxt, cache, mask = self.prefill(ids)
        return np.concatenate([nxt[:, None], self.decode(nxt, cache, mask, new_tokens - 1)], axis=1)

    def timed_decode(self, ids: np.ndarray, tokens: int) -> float:
        """Seconds to decode `tokens` tokens per row after an (untimed) prefill of `ids`."""
        nxt, cache, mask = self.prefill(ids)
        start = time.perf_counter()
        self.decode(nxt, cache, mask, tokens)
        return time.perf_counter() - start


def torch_greedy(model: torch.nn.Module, ids: np.ndarray, new_tokens: int) -> np.ndarray:
    """(rows, new_tokens) greedy continuation by transformers' generate (with its KV cache)."""
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.ones(ids.shape, dtype=torch.long),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,  # no early EOS: rows are compared position by position
            do_sample=False,
            pad_token_id=getattr(model.config, "pad_token_id", None) or 0,
        )
    return out[:, ids.shape[1] :].numpy()


def generation_agreement(reference: np.ndarray, got: np.ndarray) -> float:
    """Fraction of generated positions (rows × tokens) where the greedy tokens are equal."""
    return float((np.asarray(reference) == np.asarray(got)).mean())


def torch_timed_decode(model: torch.nn.Module, ids: np.ndarray, tokens: int) -> float:
    """Seconds for PyTorch to decode `tokens` greedy tokens per row with its KV cache, after an
    untimed prefill of `ids`: the same work OrtDecoder.timed_decode times."""
    with torch.no_grad():
        x = torch.from_numpy(ids)
        out = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True)
        # transformers 5 names the KV cache `cache` (formerly `past_key_values`)
        past, nxt, mask = out.cache, out.logits[:, -1].argmax(-1), torch.ones_like(x)
        start = time.perf_counter()
        for _ in range(tokens):
            mask = torch.cat([mask, torch.ones((len(mask), 1), dtype=mask.dtype)], dim=1)
            out = model(input_ids=nxt[:, None], attention_mask=mask, cache=past, use_cache=True)
            past, nxt = out.cache, out.logits[:, -1].argmax(-1)
        return time.perf_counter() - start
