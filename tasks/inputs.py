"""From text to model inputs, and the one way slimline runs a torch model on them.

Export, parity checks, evaluation, calibration, distillation and the benchmarks all tokenise and
feed models the same way; this module is that one way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

CANDIDATE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TaskWrapper(nn.Module):
    """Positional inputs in, one tensor out: the shape both ONNX exporters handle best."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model, self.output, self.causal = model, output_name(task), task == "causal-lm"

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kw: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        if self.causal:
            kw["use_cache"] = False
        return self.model(**kw)[self.output]


def output_name(task: str) -> str:
    """The model output slimline exports for a task."""
    return "last_hidden_state" if task == "feature-extraction" else "logits"


def input_names(model: nn.Module, tokenizer: Any) -> list[str]:
    """Inputs the model takes, in the wrapper's positional order."""
    names = [n for n in CANDIDATE_INPUTS if n in getattr(tokenizer, "model_input_names", CANDIDATE_INPUTS)]
    if "token_type_ids" in names and getattr(model.config, "type_vocab_size", 0) in (0, None):
        names.remove("token_type_ids")
    for required in ("input_ids", "attention_mask"):
        if required not in names:
            names.insert(CANDIDATE_INPUTS.index(required), required)
    return names


def _feed(enc: Any, names: list[str]) -> dict[str, np.ndarray]:
    """int64 arrays keyed by input name; an input the tokenizer does not give is all zeros."""
    ids = np.asarray(enc["input_ids"])
    return {
        n: np.asarray(enc[n]).astype(np.int64) if n in enc else np.zeros_like(ids, np.int64) for n in names
    }


def encode(tokenizer: Any, texts: list[str], batch: int, seq: int, names: list[str]) -> dict[str, np.ndarray]:
    """Real text tokenised to exactly (batch, seq), as int64 numpy arrays keyed by input name."""
    chosen = [texts[i % len(texts)] for i in range(batch)]
    enc = tokenizer(chosen, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    return _feed(enc, names)


def batches(
    tokenizer: Any,
    texts: list[str],
    batch_size: int,
    max_length: int,
    names: list[str] | None = None,
    kind: Literal["np", "pt"] = "np",
) -> Iterator[dict[str, Any]]:
    """`texts` in order, `batch_size` at a time, padded to the longest in each batch.

    With `names`, exactly those inputs (int64, zeros for one the tokenizer lacks); without, what
    the tokenizer gives. `kind` "pt" yields torch tensors.
    """
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[i : i + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        feed = _feed(enc, names) if names is not None else {k: np.asarray(v) for k, v in enc.items()}
        yield {k: torch.from_numpy(v) for k, v in feed.items()} if kind == "pt" else feed


def length_buckets(
    tokenizer: Any, texts: list[str], batch_size: int, max_length: int, names: list[str]
) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
    """(positions, feed) per batch of `texts` sorted by token count: each batch is padded to its
    own longest text, so one long text no longer pads fifteen short ones (serving's batches mix
    whatever requests arrived together). Texts are tokenised once; padding follows the
    tokenizer's side, with its pad id (0 when it has none)."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    ids = enc["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    left = getattr(tokenizer, "padding_side", "right") == "left"
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(ids[i]) for i in chunk)
        feed: dict[str, np.ndarray] = {}
        for name in names:
            rows = enc[name] if name in enc else [[0] * len(ids[i]) for i in range(len(ids))]
            fill = pad_id if name == "input_ids" else 0
            out = np.full((len(chunk), width), fill, dtype=np.int64)
            for r, i in enumerate(chunk):
                row = rows[i]
                if left:
                    out[r, width - len(row) :] = row
                else:
                    out[r, : len(row)] = row
            feed[name] = out
        yield chunk, feed


def torch_forward(wrapped: nn.Module, feed: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Run a wrapped model on a numpy feed, without gradients; float32 numpy out."""
    with torch.no_grad():
        return wrapped(*[torch.from_numpy(feed[n]) for n in names]).float().numpy()
