"""Text sources: the built-in English corpus and user files (jsonl, csv, parquet)."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from slimline.tasks.base import TaskError, utf8_error


@dataclass(frozen=True)
class Examples:
    """Texts with optional integer labels, or with rated pairs (i, j, score) of texts."""

    texts: list[str]
    labels: list[int] | None = None
    pairs: list[tuple[int, int, float]] | None = None


def builtin_corpus() -> list[str]:
    """Human-written English sentences shipped with slimline, in a fixed order."""
    raw = resources.files("slimline.tasks.data").joinpath("corpus.txt").read_text(encoding="utf-8")
    return [line.strip() for line in raw.splitlines() if line.strip()]


def load_file(
    path: str | Path,
    text_field: str = "text",
    label_field: str | None = None,
    pair_field: str | None = None,
    score_field: str | None = None,
) -> Examples:
    """Read texts (and labels, or sentence pairs with a score) from a .jsonl, .csv or .parquet file."""
    path = Path(path)
    rows = _rows(path)
    if pair_field and score_field:
        return _pairs(rows, str(path), text_field, pair_field, score_field)
    return _examples(rows, str(path), text_field, label_field)


def _rows(path: Path) -> list[dict]:
    """The file's records; any unreadable file or record is one TaskError naming the file and line."""
    if not path.is_file():
        raise TaskError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return _jsonl(path)
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as fh:
                return list(csv.DictReader(fh))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except UnicodeDecodeError as exc:
        raise TaskError(f"data file {path}: {utf8_error(exc)}") from None
    except (csv.Error, OSError, ValueError) as exc:  # pyarrow's errors are ValueErrors or OSErrors
        raise TaskError(f"data file {path}: cannot read it ({str(exc).splitlines()[0]})") from None
    raise TaskError(f"data file {path}: expected .jsonl, .csv or .parquet")


def _jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskError(f"data file {path}: line {n}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise TaskError(f"data file {path}: line {n}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _require(rows: list[dict], where: str, *names: str) -> None:
    """At least one row, and the first has every named field (the error lists the ones it has)."""
    if not rows:
        raise TaskError(f"{where}: no rows")
    for name in names:
        if name not in rows[0]:
            raise TaskError(f"{where}: no field {name!r} (fields: {', '.join(map(str, rows[0]))})")


def _field(row: dict, name: str, where: str, n: int) -> object:
    if name not in row:
        raise TaskError(f"{where}: row {n} has no field {name!r}")
    return row[name]


def _pairs(rows: list[dict], where: str, text_field: str, pair_field: str, score_field: str) -> Examples:
    """One row per rated pair; each distinct sentence becomes one eval text, in order of first use."""
    _require(rows, where, text_field, pair_field, score_field)
    index: dict[str, int] = {}
    pairs: list[tuple[int, int, float]] = []
    for n, row in enumerate(rows, 1):
        value = _field(row, score_field, where, n)
        try:
            score = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise TaskError(f"{where}: row {n}: {score_field} {value!r} is not a number") from None
        if not math.isfinite(score):
            raise TaskError(f"{where}: row {n}: {score_field} is not finite")
        i, j = (index.setdefault(str(_field(row, f, where, n)), len(index)) for f in (text_field, pair_field))
        pairs.append((i, j, score))
    return Examples(list(index), pairs=pairs)


def _examples(rows: list[dict], where: str, text_field: str, label_field: str | None) -> Examples:
    _require(rows, where, text_field)
    texts = [str(_field(r, text_field, where, n)) for n, r in enumerate(rows, 1)]
    labels = None
    if label_field:
        if label_field not in rows[0]:
            raise TaskError(f"{where}: no label field {label_field!r}")
        labels = _label_ids([_field(r, label_field, where, n) for n, r in enumerate(rows, 1)])
    return Examples(texts, labels)


def _label_ids(values: list[object]) -> list[int]:
    """Integer labels as given, or string labels mapped to ids in sorted order."""
    if all(isinstance(v, int) or (isinstance(v, str) and v.lstrip("-").isdigit()) for v in values):
        return [int(v) for v in values]  # type: ignore[call-overload]
    names = sorted({str(v) for v in values})
    return [names.index(str(v)) for v in values]


def load_hub(name: str, config: str | None, split: str, text_field: str, label_field: str | None) -> Examples:
    """Read a Hugging Face dataset (needs the `datasets` package and Hub access, or its local cache)."""
    try:
        import datasets
    except ImportError as exc:
        raise TaskError("data.eval.hf needs the 'datasets' package: pip install datasets") from exc
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:
        raise TaskError(f"data.eval.hf {name!r}: cannot load ({str(exc).splitlines()[0]})") from exc
    return _examples(list(ds), f"hf:{name}", text_field, label_field)


def python_docs(min_chars: int = 40) -> list[str]:
    """English prose sentences from the Python reference shipped with every interpreter.

    Several thousand human-written sentences, offline and deterministic: unlabeled text to
    distil on without touching the corpus that fidelity is measured on. Code samples, prompts,
    bullets and headings are dropped; paragraphs are split into sentences so that lengths look
    like the sentences models are judged on, not like whole paragraphs.
    """
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics):
        for block in topics[key].split("\n\n"):
            lines = block.splitlines()
            if not lines or lines[0].startswith(("   ", ">>>", "*", "=", "-")):
                continue
            para = " ".join(line.strip() for line in lines)
            for sent in re.split(r"(?<=[.!?])\s+(?=[A-Z])", para):
                sent = sent.strip()
                if len(sent) >= min_chars and sum(c.isalpha() or c == " " for c in sent) > 0.8 * len(sent):
                    out.append(sent)
    return out
