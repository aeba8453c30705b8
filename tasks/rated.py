"""Human-rated evaluation data that works offline: the test data installed with gensim.

gensim's wheel carries, for its own tests, the Lee document-similarity set (Lee, Pincombe and
Welsh, 2005: 50 news documents, every pair rated by people, averaged to [0, 1], plus 300
unrated background documents) and 200 sentences of Pang and Lee's movie-review polarity data
(100 negative, 100 positive). slimline never imports gensim and does not redistribute the data:
it reads these files where pip installed them (`pip install 'slimline[eval-data]'`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from slimline.tasks.base import TaskError
from slimline.tasks.text import Examples


def _test_data(name: str) -> Path:
    spec = importlib.util.find_spec("gensim")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise TaskError(
            f"data.eval.builtin {name!r} reads human-rated data installed with gensim: "
            "pip install 'slimline[eval-data]'"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data"
    if not folder.is_dir():
        raise TaskError(f"data.eval.builtin {name!r}: gensim at {folder.parent.parent} has no test data")
    return folder


def _lines(path: Path) -> list[str]:
    # The files are Windows-1252 (pound signs, em dashes), not UTF-8.
    raw = path.read_text(encoding="cp1252", errors="replace")
    return [line.strip() for line in raw.splitlines() if line.strip()]


def lee_similarity() -> Examples:
    """The 50 rated Lee documents first, then the background documents (calibration and training
    text that is never evaluated), with one pair (i, j, mean human rating) per i < j < 50."""
    folder = _test_data("lee-similarity")
    docs = _lines(folder / "lee.cor")
    rows = [[float(x) for x in line.split()] for line in _lines(folder / "similarities0-1.txt")]
    if len(docs) != 50 or len(rows) != 50 or any(len(r) != 50 for r in rows):
        raise TaskError(f"{folder}: expected 50 Lee documents and a 50 x 50 rating matrix")
    pairs = [(i, j, rows[i][j]) for i in range(50) for j in range(i + 1, 50)]  # the upper triangle
    return Examples(docs + _lines(folder / "lee_background.cor"), pairs=pairs)


def movie_polarity() -> Examples:
    """200 movie-review sentences labelled negative (0) or positive (1), interleaved so that any
    head of the list is balanced."""
    folder = _test_data("movie-polarity")
    rows = [line.split(" ", 1) for line in _lines(folder / "pang_lee_polarity.cor")]
    names = {"__label__neg": 0, "__label__pos": 1}
    if any(len(r) != 2 or r[0] not in names for r in rows):
        raise TaskError(f"{folder}/pang_lee_polarity.cor: expected '__label__neg|pos <sentence>' lines")
    neg = [r[1] for r in rows if r[0] == "__label__neg"]
    pos = [r[1] for r in rows if r[0] == "__label__pos"]
    texts = [t for pair in zip(neg, pos, strict=False) for t in pair]
    return Examples(texts, labels=[i % 2 for i in range(len(texts))])
