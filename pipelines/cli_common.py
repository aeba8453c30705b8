"""What every `slimline` command shares: one-line fatal errors, and loading a spec or exiting 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from .errors import FatalInputError

T = TypeVar("T")


def fail(ctx: click.Context | None, exc: Exception) -> NoReturn:
    """Print `error: <one line>` and exit with the error's code (2 for bad input); --debug re-raises."""
    if ctx is not None and ctx.obj and ctx.obj.get("debug"):
        raise exc
    click.echo(f"error: {exc}", err=True)
    sys.exit(getattr(exc, "exit_code", 2))


def spec_or_exit(ctx: click.Context, spec_path: str) -> Any:
    """The validated spec, or exit 2 with its one-line error."""
    from .spec import load_spec

    try:
        return load_spec(spec_path)
    except FatalInputError as exc:
        fail(ctx, exc)


def guarded(ctx: click.Context, fn: Callable[[], T], unexpected: str | None = None) -> T:
    """`fn()`, with bad input turned into the one-line exit.

    With `unexpected` (a prefix such as "job ID"), any other error also becomes a one-line exit 2:
    for services that answer a bad argument with a plain RuntimeError, like the Ray Jobs API.
    """
    try:
        return fn()
    except FatalInputError as exc:
        fail(ctx, exc)
    except Exception as exc:
        if unexpected is None:
            raise
        fail(ctx, FatalInputError(f"{unexpected}: {exc}"))
