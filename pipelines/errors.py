"""Fatal bad input (exit 2). The other family, per-variant failures, is records (see records.py)."""

from __future__ import annotations


class FatalInputError(Exception):
    """Bad input: one clear line naming the file, the field path and what was expected; exit 2."""

    exit_code = 2


class SpecError(FatalInputError):
    """The spec file is invalid."""
