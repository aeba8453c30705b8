"""Answering requests with a slimline graph folder: embeddings, labels or per-token log-probabilities.

Pure compute (no Ray, no HTTP): the Ray Serve deployment wraps a Predictor, and tests compare it
with a plain ONNX Runtime run. Outputs go through the model's own pipeline (tasks.pipeline:
pooling, normalization, sigmoid or softmax scores) exactly as evaluation does them, so a served
embedding is the one whose fidelity the sweep measured, and the one `SentenceTransformer.encode`
gives. Every text is truncated at the model's maximum length: a long text is never an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slimline.tasks.base import Record, TaskError
from slimline.tasks.graph import ONNX_NAME, read_meta, tokenizer_of, with_past
from slimline.tasks.inputs import length_buckets
from slimline.tasks.pipeline import OutputPipeline, from_meta
from slimline.tasks.runtime import session

ENDPOINTS = {"feature-extraction": "embed", "text-classification": "classify", "causal-lm": "score"}


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    top = x.max(-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))


class Predictor:
    """One ONNX Runtime session over a graph folder (model.onnx, meta.json, tokenizer)."""

    def __init__(
        self,
        folder: Path | str,
        *,
        device: str = "cpu",
        threads: int | None = None,
        max_length: int | None = None,
        spinning: bool = False,
    ) -> None:
        """`max_length`: tokens per text; None is the model's own maximum, and a larger value is
        capped at it (a text longer than the model can take is truncated, never an error)."""
        onnx_path = Path(folder) / ONNX_NAME
        if not onnx_path.is_file():
            raise TaskError(f"{folder}: expected a slimline graph folder with {ONNX_NAME}")
        self.meta: Record = read_meta(onnx_path)
        self.task: str = self.meta["task"]
        if self.task not in ENDPOINTS:
            raise TaskError(f"{folder}: cannot serve task {self.task!r}")
        self.endpoint = ENDPOINTS[self.task]
        self.tokenizer: Any = tokenizer_of(onnx_path)
        self.threads = threads
        self.session: Any = session(onnx_path, device=device, threads=threads, spinning=spinning)
        self.providers: list[str] = list(self.session.get_providers())
        self.pipeline: OutputPipeline = from_meta(self.meta)
        self.max_length = self.pipeline.length(max_length)

    def predict(self, texts: list[str], batch_size: int = 16) -> list[Record]:
        """One result per text, in order (see `_results` for each task's fields)."""
        if not texts:
            return []
        out: list[Record | None] = [None] * len(texts)
        names = self.meta["inputs"]
        for where, feed in length_buckets(self.tokenizer, texts, batch_size, self.max_length, names):
            raw = self.session.run(None, with_past(feed, self.meta))[0].astype(np.float32)
            for i, result in zip(where, self._results(raw, feed), strict=True):
                out[i] = result
        return [r for r in out if r is not None]

    def _endpoint(self, name: str, texts: list[str], batch_size: int) -> list[Record]:
        if name != self.endpoint:  # the same answer as the HTTP endpoint's 404
            raise TaskError(f"this model is {self.task}: use .{self.endpoint}()")
        return self.predict(list(texts), batch_size)

    def embed(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        """Embeddings [len(texts), dim] of a feature-extraction model: what POST /embed returns."""
        rows = self._endpoint("embed", texts, batch_size)
        return np.asarray([r["embedding"] for r in rows], dtype=np.float32)

    def classify(self, texts: list[str], batch_size: int = 16) -> list[Record]:
        """{label, score, scores} per text, for a classifier: what POST /classify returns."""
        return self._endpoint("classify", texts, batch_size)

    def score(self, texts: list[str], batch_size: int = 16) -> list[Record]:
        """{token_ids, tokens, logprobs} per text, for a causal LM: what POST /score returns."""
        return self._endpoint("score", texts, batch_size)

    def _results(self, raw: np.ndarray, feed: dict[str, np.ndarray]) -> list[Record]:
        mask = feed["attention_mask"]
        if self.task == "feature-extraction":
            return [{"embedding": row.tolist()} for row in self.pipeline.pool(raw, mask)]
        if self.task == "text-classification":
            named = self.pipeline.labels or self.meta.get("labels")
            labels = list(named or [f"LABEL_{i}" for i in range(raw.shape[-1])])
            probs = self.pipeline.scores(raw)  # sigmoid for a multi-label classifier, else softmax
            return [
                {"label": labels[int(p.argmax())], "score": float(p.max()), "scores": p.tolist()}
                for p in probs
            ]
        return [self._token_logprobs(raw[i], feed["input_ids"][i], mask[i]) for i in range(len(raw))]

    def _token_logprobs(self, logits: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> Record:
        """log p(token t+1 | tokens up to t) for every real token after the first."""
        real = np.flatnonzero(mask)  # padding may sit on either side, depending on the tokenizer
        ids_real = ids[real]
        logp = _log_softmax(logits[real[:-1]])
        picked = logp[np.arange(len(real) - 1), ids_real[1:]]
        return {
            "token_ids": ids_real.tolist(),
            "tokens": self.tokenizer.convert_ids_to_tokens(ids_real.tolist()),
            "logprobs": picked.tolist(),
        }

    def describe(self) -> Record:
        """What the replica runs: task, endpoint, providers, inputs, and the output pipeline
        (pooling, normalize, the max length it truncates at, scores)."""
        pipe = self.pipeline
        pipeline: Record = {"source": pipe.source, "max_length": self.max_length}
        if self.task == "feature-extraction":
            pipeline.update(pooling=list(pipe.pooling), normalize=pipe.normalize)
        elif self.task == "text-classification":
            scores = "sigmoid" if pipe.multi_label else "softmax"
            pipeline.update(scores=scores, problem_type=pipe.problem_type)
        if pipe.skipped:
            pipeline["not_applied"] = list(pipe.skipped)
        return {
            "task": self.task,
            "endpoint": f"/{self.endpoint}",
            "providers": self.providers,
            "inputs": self.meta["inputs"],
            "decoding_graph": bool(self.meta.get("kv_cache")),
            "pipeline": pipeline,
        }
