"""Fatal bad input (exit 2). The other family, per-variant failures, is records (see records.py)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FatalInputError(Exception):
    """Bad input: one clear line naming the file, the field path and what was expected; exit 2."""

    exit_code = 2


class SpecError(FatalInputError):
    """The spec file is invalid."""


def did_you_mean(name: object, options: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `options`, or "" when none is close."""
    close = difflib.get_close_matches(str(name), list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
