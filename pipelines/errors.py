"""The two families of error (DESIGN.md): fatal bad input (exit 2) and per-variant failures."""

from __future__ import annotations


class FatalInputError(Exception):
    """Bad input: one clear line naming the file, the field path and what was expected; exit 2."""

    exit_code = 2


class SpecError(FatalInputError):
    """The spec file is invalid."""


class RunFailed(Exception):
    """The run could not produce the baseline and at least one variant; exit 1."""

    exit_code = 1
