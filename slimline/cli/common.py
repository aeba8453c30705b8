"""What every `slimline` command shares: one-line fatal errors, and loading a spec or exiting 2."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click

from slimline.pipelines.errors import FatalInputError

T = TypeVar("T")


class OneLineErrors(click.Group):
    """A group whose usage errors are one line (`error: ...`, exit 2), like every other bad input,
    instead of click's usage block: scripts and schedulers read one line."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.format_message())  # bare `slimline`: the help, as asked
            sys.exit(0)
        except click.UsageError as exc:
            where = f" (try: {exc.ctx.command_path} --help)" if exc.ctx else ""
            click.echo(f"error: {_one_line(exc.format_message())}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        except OSError as exc:
            line = disk_line(exc)
            if line is None:
                raise
            click.echo(f"error: {line}", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def disk_line(exc: OSError) -> str | None:
    """One line for a full or read-only disk (what to free or change), or None for other errors.
    Finished stages stay cached and every state file is written whole or not at all, so the
    next run starts where this one stopped."""
    where = exc.filename or "a file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left writing {where}: free space on its disk (`slimline gc SPEC` removes "
            "stages no run keeps), then run again: finished stages are reused"
        )
    if exc.errno == errno.EROFS:
        return f"read-only file system: cannot write {where}; point artifacts.path at a writable folder"
    return None


def safe_id(value: str | None) -> str | None:
    """A --tick-id: it names folders under the artifact root, so nothing may lead outside it."""
    from slimline.pipelines.run.records import RUN_ID

    if value is not None and not RUN_ID.fullmatch(value):
        raise click.BadParameter("expected letters, digits, '.', '_' or '-' (at most 120, no '..')")
    return value


def _one_line(text: str) -> str:
    return " ".join(text.split())


def fail(ctx: click.Context | None, exc: Exception) -> NoReturn:
    """Print `error: <one line>` and exit with the error's code (2 for bad input); --debug re-raises."""
    if ctx is not None and ctx.obj and ctx.obj.get("debug"):
        raise exc
    from slimline.pipelines.uris import mask_secrets

    # Scripts read one line, whatever the cause; a URL quoted by a library keeps no password.
    click.echo(f"error: {mask_secrets(_one_line(str(exc)))}", err=True)
    sys.exit(getattr(exc, "exit_code", 2))


def spec_or_exit(ctx: click.Context, spec_path: str) -> Any:
    """The validated spec, or exit 2 with its one-line error."""
    from slimline.api import validate

    try:
        return validate(spec_path)
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


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool = True) -> Iterator[None]:
    """Send everything written to stdout, by Python or by native code, to stderr for the block.

    Ray prints worker notices ("(raylet) A worker died ...") to the driver's stdout from its own
    threads; `--json` promises one JSON document there. Both the Python stream and file
    descriptor 1 are redirected, and restored after.
    """
    if not enabled:
        yield
        return
    sys.stdout.flush()
    try:
        fd, err_fd = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, io.UnsupportedOperation, ValueError):  # in-memory streams (click's runner)
        fd = err_fd = None
    saved = os.dup(fd) if fd is not None else None
    if fd is not None and err_fd is not None:
        os.dup2(err_fd, fd)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        if saved is not None and fd is not None:
            os.dup2(saved, fd)
            os.close(saved)
