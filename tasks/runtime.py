"""ONNX Runtime sessions and thread settings, chosen explicitly rather than by library defaults."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


@functools.cache
def cuda_usable() -> bool:
    """True only when a CUDA device really exists (onnxruntime-gpu lists its CUDA provider regardless)."""
    return bool(torch.cuda.is_available())


# Providers that need an NVIDIA GPU: onnxruntime-gpu lists them whether or not one is there.
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})


def provider_line(available: list[str], cuda: bool) -> str:
    """The ONNX Runtime providers, those that cannot run here marked (`doctor`)."""
    return ", ".join(
        p if cuda or p not in GPU_PROVIDERS else f"{p} (unusable: no CUDA device)" for p in available
    )


def providers_for(device: str) -> list[str]:
    """Execution providers for `device` ("cpu" or "cuda"), always ending with the CPU provider."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda" and cuda_usable() and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(
    path: Path | str | bytes, *, device: str = "cpu", threads: int | None = None, spinning: bool = True
) -> Any:
    """An InferenceSession with explicit providers and intra-op threads.

    Passing providers explicitly keeps onnxruntime-gpu quiet on CPU-only machines, and setting the
    thread count here matters under Ray, which sets OMP threads to the task's CPU share.
    `spinning=False` makes idle ORT threads sleep instead of busy-waiting for the next call: a
    server shares its cores with the HTTP proxy and the request queue, which spinning can starve.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    model = path if isinstance(path, bytes) else str(path)  # bytes: a serialized ModelProto
    return ort.InferenceSession(model, opts, providers=providers_for(device))


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """ORT's quantizer warns on the root logger ("consider pre-processing"); we already do what it asks."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quiet_libraries() -> None:
    """Silence library chatter that says nothing about our run (progress bars, optional-op notices)."""
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    logging.getLogger("transformers.modeling_utils").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass


def set_torch_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads (Ray tasks otherwise inherit the worker's setting)."""
    if threads:
        torch.set_num_threads(threads)
