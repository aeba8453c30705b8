"""The technique contract: one typed `apply` per stage kind, bound to its config by a decorator.

A technique module defines a TechniqueConfig subclass and decorates its `apply` with
`@register_technique(TheConfig)`. The decorator checks that `apply` takes its stage's call
(below) and binds the two; the catalog (tasks.catalog) then lists every module whose `apply`
is bound. A config is bound once: a second `apply` for it is an error, not an override.

The calls, one per stage (`cfg` is the technique's own config):
- prune:    apply(cfg, model, batches) -> Record; prunes the torch model in place.
- distill:  apply(cfg, student, teacher, tokenizer, texts, *, task, max_length, device
            [, resume_from]) -> Record; trains the student in place.
- quantize: apply(cfg, src, dst, *, calibration, device, max_length) -> dict | None; writes
            the quantized graph at `dst`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from slimline.tasks.base import Record, TechniqueConfig

if TYPE_CHECKING:  # types only: importing the catalog must not import torch
    from torch import Tensor, nn


# `cfg` is Any in the protocols: each technique's apply takes its own config class, and a
# parameter type narrower than the protocol's would not match it.
class PruneFn(Protocol):
    """Prune `model` in place; `batches` are calibration batches when `cfg.needs_calibration()`."""

    def __call__(
        self, cfg: Any, model: nn.Module, batches: list[dict[str, Tensor]] | None = None, /
    ) -> Record:
        """Prune in place and return a small JSON record."""
        ...


class DistillFn(Protocol):
    """Train `student` in place to imitate `teacher` on `texts`.

    `resume_from` (only ever passed to a technique whose config is `resumable`) is the output
    folder of a stopped run of the same schedule, whose weights `student` then holds.
    """

    def __call__(
        self,
        cfg: Any,
        student: nn.Module,
        teacher: nn.Module,
        tokenizer: Any,
        texts: list[str],
        /,
        *,
        task: str,
        max_length: int,
        device: str,
        resume_from: Path | None = None,
    ) -> Record:
        """Train in place; the record's `_state` (if any) is the checkpoint a later run resumes."""
        ...


class QuantizeFn(Protocol):
    """Write the quantized graph of `src` (a private copy) to `dst`."""

    def __call__(
        self,
        cfg: Any,
        src: Path,
        dst: Path,
        /,
        *,
        calibration: list[str] | None,
        device: str,
        max_length: int,
    ) -> dict[str, Any] | None:
        """Quantize; may return fields for the stage record (e.g. a sensitivity table)."""
        ...


@dataclass(frozen=True)
class Resume:
    """How a stopped run of a resumable technique is continued (its config has `resumable = True`)."""

    # The checkpoint's file name in the output folder: the stage saves the record's `_state` there.
    state_file: str
    # The step a run of `cfg` can resume from with the checkpoint in `folder`, or None when it cannot.
    step: Callable[[Path, Any], int | None]


F = TypeVar("F", PruneFn, DistillFn, QuantizeFn)


@dataclass(frozen=True)
class Technique(Generic[F]):
    """One technique: its name, config class, typed `apply`, one-line description and resume support."""

    name: str
    config: type[TechniqueConfig]
    apply: F
    doc: str
    resume: Resume | None = None


# Every bound apply, by its config class (the catalog lists those of the modules it adds).
BOUND: dict[type[TechniqueConfig], Technique[Any]] = {}

# Stand-in arguments of each stage's call: a bound apply must accept them (checked by signature only).
_CALLS: dict[str, tuple[int, tuple[str, ...]]] = {
    "prune": (3, ()),
    "distill": (5, ("task", "max_length", "device")),
    "quantize": (3, ("calibration", "device", "max_length")),
}


def _check_call(fn: Callable[..., Any], config: type[TechniqueConfig], where: str) -> None:
    positional, keywords = _CALLS[config.stage]
    if config.resumable:
        keywords += ("resume_from",)
    try:
        inspect.signature(fn).bind(*range(positional), **dict.fromkeys(keywords))
    except TypeError as exc:
        raise TypeError(
            f"{where}: not the {config.stage} call ({positional} positional arguments, then "
            f"{', '.join(keywords)} by keyword): {exc}"
        ) from None


def register_technique(
    config: type[TechniqueConfig], *, resume: Resume | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Bind the decorated function as the `apply` of `config` (and, for a resumable config, `resume`).

    Fails at import, with the place named, when `config` is not a technique config with a
    method name, when `config` is bound already, when the function does not take its stage's
    call, or when `resume` is given exactly when `config.resumable` is not.
    """

    def bind(fn: Callable[..., Any]) -> Callable[..., Any]:
        where = f"{fn.__module__}.{fn.__qualname__}"
        if not (isinstance(config, type) and issubclass(config, TechniqueConfig)):
            raise TypeError(f"{where}: @register_technique takes a TechniqueConfig subclass, not {config!r}")
        name = config.model_fields["method"].default if "method" in config.model_fields else None
        if not isinstance(name, str) or getattr(config, "stage", None) not in _CALLS:
            raise TypeError(
                f"{where}: {config.__name__} needs a `method` default and a `stage` (prune|distill|quantize)"
            )
        known = BOUND.get(config)
        if known is not None and known.apply is not fn:
            first = f"{known.apply.__module__}.{known.apply.__qualname__}"
            raise TypeError(f"{where}: {config.__name__} is registered already, to {first}")
        if config.resumable != (resume is not None):
            raise TypeError(
                f"{where}: {config.__name__}.resumable is {config.resumable}: give resume= exactly when True"
            )
        _check_call(fn, config, where)
        module = inspect.getmodule(fn)
        doc = (config.__doc__ or (module.__doc__ if module else None) or "").strip().splitlines()
        BOUND[config] = Technique(name, config, fn, doc[0] if doc else "", resume)
        return fn

    return bind


def bound_technique(fn: object) -> Technique[Any] | None:
    """The technique whose `apply` is `fn`, or None when `fn` was never bound."""
    return next((t for t in BOUND.values() if t.apply is fn), None)
