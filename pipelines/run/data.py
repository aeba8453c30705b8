"""The texts of one run: eval (+labels), calibration, and distillation training text."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimline.pipelines.spec.spec import BuiltinData, FileData, HubData, Spec
from slimline.tasks.base import TaskError
from slimline.tasks.pipeline import FALLBACK_MAX_LENGTH
from slimline.tasks.rated import lee_similarity, movie_polarity
from slimline.tasks.text import Examples, builtin_corpus, load_file, python_docs

log = logging.getLogger(__name__)


def offline_text() -> Examples:
    """Every offline text but the corpus fidelity is judged on: the Python docs' prose, the Lee
    news documents (rated and background) and the movie-review sentences, interleaved so that any
    head of the list mixes the three."""
    sources = [python_docs(), lee_similarity().texts, movie_polarity().texts]
    longest = max(len(s) for s in sources)
    return Examples([s[i] for i in range(longest) for s in sources if i < len(s)])


BUILTINS: dict[str, Callable[[], Examples]] = {
    "corpus": lambda: Examples(builtin_corpus()),
    "python-docs": lambda: Examples(python_docs()),
    "lee-similarity": lee_similarity,
    "movie-polarity": movie_polarity,
    "offline": offline_text,
}


@dataclass(frozen=True)
class RunData:
    """Everything a run reads as text, fixed before any stage starts."""

    eval_texts: list[str]
    labels: list[int] | None
    calibration: list[str]
    train: list[str] = field(default_factory=list)  # empty unless distillation is enabled
    pairs: list[tuple[int, int, float]] | None = None  # rated pairs among eval_texts

    def digest(self, max_length: int) -> str:
        """Hash of what the eval, quantize and prune stages read (training text has its own)."""
        if self.pairs is None:  # the digest of every run before pairs existed, kept
            return digest(self.eval_texts, self.labels, self.calibration, max_length)
        return digest(self.eval_texts, self.labels, self.calibration, max_length, self.pairs)

    def head(self, n: int) -> RunData:
        """The first `n` eval texts (with their labels and the rated pairs among them): a cheap
        rung of a search. Calibration and training text stay as they are."""
        if n >= len(self.eval_texts):
            return self
        pairs = [p for p in self.pairs if p[0] < n and p[1] < n] if self.pairs is not None else None
        labels = self.labels[:n] if self.labels else None
        return RunData(self.eval_texts[:n], labels, self.calibration, self.train, pairs)

    def train_digest(self, max_length: int) -> str | None:
        """Hash of the distillation text, or None when there is none."""
        return digest(self.train, max_length) if self.train else None


def digest(*parts: Any) -> str:
    """Hash of texts, labels and settings."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def _read(src: BuiltinData | FileData | HubData) -> tuple[Examples, int]:
    """The source's examples and how many of them to use."""
    if isinstance(src, BuiltinData):
        return BUILTINS[src.builtin](), src.count()
    if isinstance(src, FileData):
        ex = load_file(src.path, src.text_field, src.label_field, src.pair_field, src.score_field)
    else:
        from slimline.tasks.text import load_hub

        ex = load_hub(src.hf, src.config, src.split, src.text_field, src.label_field)
    return ex, src.samples or len(ex.texts)


def prepare_data(spec: Spec) -> RunData:
    """Eval texts (+labels), a calibration slice disjoint from them, and training text if needed.

    Training text never includes an eval text: fidelity is measured on text distillation never
    saw. Without `data.train` it is the eval source beyond the eval slice.
    """
    ex, n = _read(spec.data.eval)
    texts, labels = ex.texts, ex.labels
    n_cal = spec.data.calibration.samples
    # Calibration comes from the end so that it stays disjoint from the eval head whenever possible.
    n = min(n, max(1, len(texts) - n_cal))
    calib = texts[n:][-n_cal:] or texts[:n_cal]
    eval_texts = texts[:n]
    train: list[str] = []
    searched = spec.search is not None and spec.search.space.distillation is not None
    if spec.variants.distillation.enabled or searched:
        if spec.data.train is not None:
            tex, n_train = _read(spec.data.train)
            pool = tex.texts[:n_train]
        else:
            pool = texts[n:]
        held_out = set(eval_texts)
        train = [t for t in pool if t not in held_out]
        if not train:
            raise TaskError(
                "data.train: distillation needs training text that is not eval text; "
                "give data.train (e.g. {builtin: python-docs}) or a larger data.eval source"
            )
    pairs = [p for p in ex.pairs if p[0] < n and p[1] < n] if ex.pairs is not None else None
    if pairs is not None and len(pairs) < 3:
        raise TaskError(
            f"data.eval: only {len(pairs)} rated pairs among the {n} eval texts; "
            "raise data.eval.samples or lower data.calibration.samples"
        )
    return RunData(eval_texts, labels[:n] if labels else None, calib, train, pairs)


def _model_max_length(source: str, task: str) -> int | None:
    """The longest input the model takes (its pipeline's max length), read from its config files."""
    from slimline.tasks.load import is_gguf, resolve_source

    path = resolve_source(source)
    marker = Path(path) if is_gguf(path) else Path(path) / "config.json"
    stamp = (marker.stat().st_mtime_ns, marker.stat().st_size) if marker.is_file() else None
    return _read_max_length(path, task, stamp)


@functools.lru_cache(maxsize=16)
def _read_max_length(path: str, task: str, stamp: tuple[int, int] | None) -> int | None:
    """Cached per file version: a GGUF's config takes seconds to read, and a search prepares often."""
    from slimline.tasks.load import source_pipeline

    return source_pipeline(path, task).max_length


def resolve_max_length(spec: Spec) -> Spec:
    """The spec with `data.max_length` resolved: the model's own maximum when the spec gives none,
    and a value above that maximum capped at it (with a warning): a text is never longer than the
    model's position embeddings. A model whose maximum cannot be read keeps the old default, 128."""
    asked = spec.data.max_length
    limit = _model_max_length(spec.model.source, spec.model.task)
    if asked is None:
        n = limit or FALLBACK_MAX_LENGTH
    elif limit is not None and asked > limit:
        log.warning("data.max_length %d is above the model's maximum %d: capped at %d", asked, limit, limit)
        n = limit
    else:
        return spec
    return spec.model_copy(update={"data": spec.data.model_copy(update={"max_length": n})})
