"""Text generation with a KV-cache decoding graph: prompts or chat messages in, text out.

Pure compute (no Ray, no HTTP): the served `POST /generate` (cluster.serve_generate) and tests use
it alike. A `Generator` is built from what a `tasks.serving.Predictor` holds, its ONNX Runtime
session, meta.json and tokenizer (`Generator.from_predictor`; or pass the three yourself), so the
replica keeps one session for /score and /generate.

One request is a `Sequence`: its sampling settings and random generator (numpy, seeded: the same
seed gives the same text), the tokens so far, and the text decoded incrementally (a token that
ends inside a multi-byte character waits for the next), with stop strings cut and text that may
still become a stop string held back. A `Batch` decodes many sequences together, one token per
sequence per step.

Batching and padding. The graph (ONNX Runtime GenAI's builder, tasks.kv_export) runs
GroupQueryAttention, which reads only the *sum* of each attention-mask row: it takes row b's
tokens to be the first `sum(mask[b])` positions, and rotates the new token to position
`sum(mask[b]) - 1`. Left padding therefore shifts a short prompt's positions and attends to the
pads (measured: the first token of a left-padded 5-token prompt batched with a 9-token one
differs from its unpadded token). Right padding is what the kernel expects: each row's cache is
its valid prefix, then slack. So a batch here is right-padded: a prompt's logits are read at its
own last token, each step appends one token per row at that row's length, and rows of different
lengths (prompts started at different steps, too) share a batch exactly; the tests check that
batched tokens equal those decoded alone. Sequences may join a running batch between steps
(their prompts prefilled as a group, their caches padded to the batch's width) and leave it when
they finish.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimline.tasks.base import Record, TaskError, read_json
from slimline.tasks.graph import PAST, PRESENT, empty_past, past_names
from slimline.tasks.pipeline import from_meta

MAX_STOPS = 4
# Prompt tokens decoded in front of the generated ones: a SentencePiece token's leading space is
# only rendered after another token, so the first generated word keeps its space.
CONTEXT_TOKENS = 5
FINISH_REASONS = ("stop", "length", "eos")
Messages = list[dict[str, Any]]  # chat turns: {"role": ..., "content": ...}


@dataclass(frozen=True)
class Params:
    """How one request samples: greedy at temperature 0, else temperature + top-p with `seed`."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: at least 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature: at least 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: in (0, 1], got {self.top_p}")
        if len(self.stop) > MAX_STOPS or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop: at most {MAX_STOPS} non-empty strings")


def _top_p(probs: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, renormalized probabilities) of the nucleus: the most likely tokens whose mass
    first reaches `top_p`. The top k are partitioned out, k growing until they hold `top_p`, so a
    49k vocabulary is not sorted at every step; the nucleus is exact."""
    k = min(64, len(probs))
    while True:
        top = np.argpartition(-probs, k - 1)[:k] if k < len(probs) else np.arange(len(probs))
        top = top[np.argsort(-probs[top], kind="stable")]
        mass = np.cumsum(probs[top])
        if mass[-1] >= top_p or k == len(probs):
            break
        k = min(4 * k, len(probs))
    keep = int(np.searchsorted(mass, top_p)) + 1  # tokens until the cumulative mass reaches top_p
    ids = top[: min(keep, len(top))]
    return ids, probs[ids] / probs[ids].sum()


class Sequence:
    """One request being generated: its tokens, its text so far and the deltas not yet taken."""

    def __init__(self, gen: Generator, prompt_ids: list[int], params: Params) -> None:
        self.gen, self.params, self.prompt_ids = gen, params, prompt_ids
        self.rng = np.random.default_rng(params.seed)
        self.token_ids: list[int] = []
        self.finish_reason: str | None = None
        self.text = ""  # the output so far: stop strings cut, pending multi-byte tokens not yet in
        self._sent = 0  # characters of `text` handed out by `take`
        self._ctx = prompt_ids[-CONTEXT_TOKENS:]
        self._prefix, self._read = 0, len(self._ctx)  # decode offsets into ctx + token_ids

    @property
    def done(self) -> bool:
        """Whether generation of this sequence has ended (finish_reason says why)."""
        return self.finish_reason is not None

    @property
    def length(self) -> int:
        """Tokens in the model's context: prompt and generated."""
        return len(self.prompt_ids) + len(self.token_ids)

    def choose(self, logits: np.ndarray) -> int:
        """The next token from one row of last-position logits: argmax, or a seeded sample."""
        if self.params.temperature == 0:
            return int(np.argmax(logits))
        x = logits.astype(np.float64) / self.params.temperature
        p = np.exp(x - x.max())
        p /= p.sum()
        if self.params.top_p < 1:
            ids, q = _top_p(p, self.params.top_p)
            return int(ids[self.rng.choice(len(ids), p=q)])
        return int(self.rng.choice(len(p), p=p))

    def push(self, token: int) -> None:
        """Append a generated token; ends the sequence on EOS, a stop string or the length limit."""
        self.token_ids.append(token)
        if token in self.gen.eos_token_ids:
            self.finish_reason = "eos"
            return
        self._decode()
        if self.done:
            return
        if len(self.token_ids) >= self.params.max_new_tokens or self.length >= self.gen.context:
            self.finish_reason = "length"

    def _decode(self) -> None:
        """Grow `text` by the new token's characters, unless it ends inside a character (U+FFFD
        then); a stop string found cuts the text before it and ends the sequence."""
        ids = self._ctx + self.token_ids
        before = self.gen.detokenize(ids[self._prefix : self._read])
        now = self.gen.detokenize(ids[self._prefix :])
        if len(now) <= len(before) or now.endswith("\ufffd"):
            return
        start = max(0, len(self.text) - max((len(s) for s in self.params.stop), default=0))
        self.text += now[len(before) :]
        self._prefix, self._read = self._read, len(ids)
        hits = [i for i in (self.text.find(s, start) for s in self.params.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.finish_reason = "stop"

    def cancel(self) -> None:
        """End the sequence now (its client went away): a Batch drops it at the next step."""
        if not self.done:
            self.finish_reason = "cancelled"

    def take(self) -> str:
        """The text produced since the last call. While running, text that could still become a
        stop string is held back; once done, everything left is given."""
        end = len(self.text)
        if not self.done:
            end -= _held(self.text, self.params.stop)
        delta = self.text[self._sent : max(end, self._sent)]
        self._sent += len(delta)
        return delta

    def result(self) -> Record:
        """{text, token_ids, finish_reason, prompt_tokens, completion_tokens}."""
        return {
            "text": self.text,
            "token_ids": list(self.token_ids),
            "finish_reason": self.finish_reason,
            "prompt_tokens": len(self.prompt_ids),
            "completion_tokens": len(self.token_ids),
        }


def _held(text: str, stops: Seq[str]) -> int:
    """Characters at the end of `text` that begin some stop string (they may yet complete it)."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


class Batch:
    """Sequences decoded together, right-padded (see the module docstring), one token each per step."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.seqs: list[Sequence] = []
        self.cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.seqs)

    def add(self, seqs: list[Sequence]) -> None:
        """Prefill `seqs` as one right-padded batch, choose each one's first token, and merge
        those still running into this batch."""
        seqs = [s for s in seqs if not s.done]
        if not seqs:
            return
        lens = np.array([len(s.prompt_ids) for s in seqs])
        ids = np.zeros((len(seqs), int(lens.max())), np.int64)
        for i, s in enumerate(seqs):
            ids[i, : lens[i]] = s.prompt_ids
        mask = (np.arange(ids.shape[1])[None] < lens[:, None]).astype(np.int64)
        logits, cache = self.gen.run({"input_ids": ids, "attention_mask": mask, **self.gen.empty(len(seqs))})
        for i, s in enumerate(seqs):
            s.push(s.choose(logits[i, lens[i] - 1]))
        self._merge(seqs, cache)

    def step(self) -> None:
        """One token for every running sequence; finished ones leave the batch."""
        self._drop_done()
        if not self.seqs:
            return
        lens = np.array([s.length for s in self.seqs])  # the cache holds all but the last token
        width = next(iter(self.cache.values())).shape[2] + 1
        mask = (np.arange(width)[None] < lens[:, None]).astype(np.int64)
        last = np.array([[s.token_ids[-1]] for s in self.seqs], np.int64)
        logits, self.cache = self.gen.run({"input_ids": last, "attention_mask": mask, **self.cache})
        for i, s in enumerate(self.seqs):
            s.push(s.choose(logits[i, -1]))
        self._drop_done()

    def _merge(self, seqs: list[Sequence], cache: dict[str, np.ndarray]) -> None:
        keep = [i for i, s in enumerate(seqs) if not s.done]
        if not keep:
            return
        if len(keep) < len(seqs):
            cache = {k: v[keep] for k, v in cache.items()}
        if self.seqs:
            width = max(v.shape[2] for v in (*cache.values(), *self.cache.values()))
            cache = {
                k: np.concatenate([_widen(self.cache[k], width), _widen(v, width)]) for k, v in cache.items()
            }
        self.seqs += [seqs[i] for i in keep]
        self.cache = cache

    def _drop_done(self) -> None:
        keep = [i for i, s in enumerate(self.seqs) if not s.done]
        if len(keep) == len(self.seqs):
            return
        self.seqs = [self.seqs[i] for i in keep]
        if not keep:
            self.cache = {}
            return
        # The slack past the longest remaining row is never read: cut it, so the rows left do
        # not pay for a finished long one.
        width = max(s.length for s in self.seqs) - 1
        self.cache = {k: v[keep, :, :width] for k, v in self.cache.items()}


def _widen(x: np.ndarray, width: int) -> np.ndarray:
    """A cache right-padded with zeros to `width` positions (the kernel never reads the slack)."""
    pad = width - x.shape[2]
    return x if pad == 0 else np.pad(x, ((0, 0), (0, 0), (0, pad), (0, 0)))


class Generator:
    """Generation over a decoding graph: `session` is an ONNX Runtime session of a graph whose
    meta.json (`meta`) has a `kv_cache` entry, `tokenizer` the tokenizer saved beside it."""

    def __init__(
        self,
        session: Any,
        meta: Record,
        tokenizer: Any,
        *,
        eos_token_ids: Seq[int] = (),
        context: int | None = None,
    ) -> None:
        """`eos_token_ids`: tokens that end generation besides the tokenizer's EOS. `context`:
        the most tokens (prompt + generated) the model takes; None is the graph's own maximum
        (its output pipeline's max length, the model's positions)."""
        if meta.get("task") != "causal-lm" or not meta.get("kv_cache"):
            raise TaskError("generation needs a causal LM's decoding graph (exported with a KV cache)")
        self.session, self.meta, self.tokenizer = session, meta, tokenizer
        own = getattr(tokenizer, "eos_token_id", None)
        self.eos_token_ids = frozenset([*eos_token_ids, *([own] if isinstance(own, int) else [])])
        self.context = from_meta(meta).length(context)
        self.past = past_names(meta)
        self.outputs = ["logits", *(n.replace(PAST.split("{")[0], PRESENT.split("{")[0]) for n in self.past)]

    @classmethod
    def from_predictor(cls, predictor: Any, folder: Path | str | None = None) -> Generator:
        """The Generator of a `tasks.serving.Predictor` (sharing its session); `folder`, the graph
        folder, adds the EOS ids of its genai_config.json (the model's, beside the tokenizer's)."""
        eos: list[int] = []
        config = Path(folder) / "genai_config.json" if folder is not None else None
        if config is not None and config.is_file():
            found = read_json(config).get("model", {}).get("eos_token_id")
            eos = [found] if isinstance(found, int) else [i for i in found or [] if isinstance(i, int)]
        return cls(predictor.session, predictor.meta, predictor.tokenizer, eos_token_ids=eos)

    def run(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One graph call: logits, and the cache grown by the fed tokens."""
        logits, *presents = self.session.run(self.outputs, feed)
        return logits, dict(zip(self.past, presents, strict=True))

    def empty(self, batch: int) -> dict[str, np.ndarray]:
        """A zero-length cache for `batch` rows: the next call is a prefill."""
        return empty_past(self.meta, batch)

    def detokenize(self, ids: list[int]) -> str:
        """Text of token ids, special tokens left out."""
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def prompt_ids(
        self, prompt: str | None = None, messages: Messages | None = None, max_new_tokens: int = 1
    ) -> list[int]:
        """Token ids of `prompt`, or of chat `messages` rendered by the tokenizer's chat template
        with the assistant's turn opened; cut from the left so that the prompt and
        `max_new_tokens` fit the context (at least one prompt token is kept)."""
        if (prompt is None) == (messages is None):
            raise ValueError("give a prompt or chat messages, not both")
        if messages is not None:
            if not getattr(self.tokenizer, "chat_template", None):
                raise TaskError("this model's tokenizer has no chat template: send a prompt instead")
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            # The template writes the special tokens (BOS included) itself.
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(prompt)["input_ids"]
        if not ids:
            raise ValueError("the prompt is empty: it has no tokens")
        room = max(1, self.context - max_new_tokens)
        return list(ids[-room:])

    def start(
        self, prompt: str | None = None, messages: Messages | None = None, params: Params | None = None
    ) -> Sequence:
        """A Sequence for one request, ready to join a Batch."""
        params = params or Params()
        return Sequence(self, self.prompt_ids(prompt, messages, params.max_new_tokens), params)

    def stream(
        self, prompt: str | None = None, messages: Messages | None = None, params: Params | None = None
    ) -> Iterator[str]:
        """Text deltas of one request as they are decoded; they concatenate to its whole text."""
        seq = self.start(prompt, messages, params)
        yield from self.stream_sequence(seq)

    def stream_sequence(self, seq: Sequence) -> Iterator[str]:
        """Decode `seq` alone, yielding its non-empty text deltas; `seq.result()` after it ends."""
        batch = Batch(self)
        batch.add([seq])
        while True:
            delta = seq.take()
            if delta:
                yield delta
            if seq.done:
                return
            batch.step()

    def generate(
        self, prompt: str | None = None, messages: Messages | None = None, params: Params | None = None
    ) -> Record:
        """One request decoded whole: {text, token_ids, finish_reason, prompt_tokens, completion_tokens}."""
        seq = self.start(prompt, messages, params)
        for _ in self.stream_sequence(seq):
            pass
        return seq.result()

    def generate_batch(self, requests: list[tuple[str | Messages, Params]]) -> list[Record]:
        """Several requests decoded in one batch: (prompt text or chat messages, params) each;
        the same results as `generate` one at a time."""
        seqs = [
            self.start(messages=p, params=params)
            if isinstance(p, list)
            else self.start(prompt=p, params=params)
            for p, params in requests
        ]
        batch = Batch(self)
        batch.add(seqs)
        while batch:
            batch.step()
        return [s.result() for s in seqs]
