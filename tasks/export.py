"""Export to ONNX (dynamo first, legacy TorchScript exporter as fallback) with a parity check.

Causal LMs the ONNX Runtime GenAI builder supports get a decoding graph with a KV cache instead
(tasks.kv_export); the others keep a single forward graph. The parity check runs ONNX Runtime
against torch on real text at two (batch, sequence) shapes, and decoding graphs must also
generate torch's greedy tokens; a breach raises ParityError, a per-variant failure the pipeline
records and moves past.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from slimline.tasks import _structural as st
from slimline.tasks import kv_export
from slimline.tasks.base import LAX, Record, StepConfig, TaskError, atomic_dir
from slimline.tasks.families import detect, get_path, layers_of, num_heads
from slimline.tasks.graph import ONNX_NAME, compare, onnx_size_bytes, with_past, write_meta
from slimline.tasks.inputs import TaskWrapper, encode, input_names, output_name, torch_forward
from slimline.tasks.load import load_pretrained, load_tokenizer
from slimline.tasks.pipeline import META_KEY, read_pipeline
from slimline.tasks.profile import ProfileConfig
from slimline.tasks.profile import apply as profile_apply
from slimline.tasks.runtime import session

log = logging.getLogger(__name__)


class ParityError(TaskError):
    """ONNX Runtime output differs from torch beyond the configured tolerance."""


class ExportConfig(StepConfig):
    """How to export and how close ONNX Runtime must stay to torch."""

    # 2: `auto` gives causal LMs a decoding graph (KV cache) when ONNX Runtime GenAI's builder can;
    # 3: meta.json records the model's output pipeline (tasks.pipeline)
    version: ClassVar[int] = 3
    method: Literal["export"] = "export"
    # auto: the GenAI builder for the causal LMs it supports, else dynamo, then legacy on failure
    exporter: Literal["auto", "genai", "dynamo", "legacy"] = "auto"
    opset: int = Field(default=18, ge=17)
    atol: float = Field(default=1e-3, gt=0)
    min_cosine: float = Field(default=0.9999, gt=0, le=1)
    parity_shapes: Annotated[tuple[Annotated[tuple[int, int], LAX], ...], LAX] = ((1, 5), (3, 17))
    greedy_tokens: int = Field(default=16, ge=0)  # decoding graphs: greedy tokens that must equal torch's


def check_parity(
    onnx_path: Path, wrapped: nn.Module, tokenizer: Any, meta: Record, texts: list[str], cfg: ExportConfig
) -> list[Record]:
    """Compare ORT and torch at every parity shape; raise ParityError on a breach."""
    sess = session(onnx_path)
    results = []
    names = meta["inputs"]
    for batch, seq in cfg.parity_shapes:
        feed = encode(tokenizer, texts, batch, seq, names)
        got, want = sess.run(None, with_past(feed, meta))[0], torch_forward(wrapped, feed, names)
        if not (np.isfinite(got).all() and np.isfinite(want).all()):
            raise TaskError(f"non-finite outputs at batch {batch} x seq {seq} (torch or ONNX Runtime)")
        max_abs, cos = compare(got, want)
        results.append({"batch": batch, "seq": seq, "max_abs": max_abs, "cosine": cos})
        if not (max_abs <= cfg.atol and cos >= cfg.min_cosine):
            raise ParityError(
                f"parity breach at batch {batch} x seq {seq}: max_abs {max_abs:.3g} (atol {cfg.atol:g}), "
                f"cosine {cos:.6f} (min {cfg.min_cosine:g})"
            )
    return results


def _exporter_options(name: str, names: list[str], out: str, big: bool) -> dict[str, Any]:
    """What differs between the two exporters: how dynamic axes are said, and external data."""
    if name == "dynamo":
        dyn = torch.export.Dim.DYNAMIC
        return {
            "dynamo": True,
            "dynamic_shapes": tuple({0: dyn, 1: dyn} for _ in names),
            "external_data": big,
            "verbose": False,
        }
    return {"dynamo": False, "dynamic_axes": {n: {0: "batch", 1: "sequence"} for n in [*names, out]}}


def export_model(
    model: nn.Module, tokenizer: Any, task: str, path: Path, texts: list[str], cfg: ExportConfig
) -> Record:
    """Export `model` to `path`, trying the configured exporter(s); returns which one was used."""
    names = input_names(model, tokenizer)
    wrapped = TaskWrapper(model, task).eval()
    out = output_name(task)
    # Batch and sequence of at least 2: the dynamo exporter specialises any axis of size 1.
    feed = encode(tokenizer, texts, 2, 8, names)
    args = tuple(torch.from_numpy(feed[n]) for n in names)
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.8e9
    order = {"auto": ["dynamo", "legacy"], "dynamo": ["dynamo"], "legacy": ["legacy"]}[cfg.exporter]
    errors: dict[str, str] = {}
    for name in order:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    wrapped,
                    args,
                    str(path),
                    opset_version=cfg.opset,
                    input_names=names,
                    output_names=[out],
                    **_exporter_options(name, names, out, big),
                )
            return {"exporter": name, "exporter_errors": errors, "inputs": names, "wrapped": wrapped}
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
            log.info("%s exporter failed: %s", name, errors[name])
    raise TaskError(f"ONNX export failed with every exporter: {errors}")


def model_meta(model: nn.Module, task: str, names: list[str]) -> Record:
    """What later graph stages need to know about the model behind an ONNX file."""
    fam = detect(model)
    n0 = num_heads(model, fam)
    head_dim = int(getattr(model.config, "head_dim", None) or model.config.hidden_size // n0)
    kept = st.out_major(get_path(layers_of(model, fam)[0], fam.o)).shape[1] // head_dim
    return {
        "task": task,
        "family": fam.name,
        "model_type": model.config.model_type,
        "inputs": names,
        "output": output_name(task),
        "num_heads": kept,
        "head_dim": head_dim,
        "hidden_size": int(model.config.hidden_size),
        "num_layers": len(layers_of(model, fam)),
        # A server answers with label names; a classifier's config is not copied beside the graph.
        **({"labels": _labels(model)} if task == "text-classification" else {}),
    }


def _labels(model: nn.Module) -> list[str]:
    id2label = getattr(model.config, "id2label", None) or {}
    n = int(getattr(model.config, "num_labels", len(id2label)))
    return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]


def _decoding_graph(cfg: ExportConfig, model: nn.Module, task: str) -> tuple[bool, str | None]:
    """Whether to build a decoding graph, and why not when `auto` falls back."""
    why = kv_export.unsupported(model, task)
    if cfg.exporter == "genai" and why:
        raise TaskError(f"exporter 'genai': {why}")
    return cfg.exporter in ("auto", "genai") and why is None, why


def _export_decoding(
    cfg: ExportConfig, model: nn.Module, tok: Any, model_dir: Path, tmp: Path, task: str, texts: list[str]
) -> Record:
    kv_export.build(model_dir, tmp)
    meta = {
        **model_meta(model, task, ["input_ids", "attention_mask"]),
        "exporter": "genai",
        "kv_cache": kv_export.kv_meta(model),
    }
    wrapped = TaskWrapper(model, task).eval()
    parity = check_parity(tmp / ONNX_NAME, wrapped, tok, meta, texts, cfg)
    greedy = kv_export.greedy_parity(tmp / ONNX_NAME, meta, model, tok, texts, cfg.greedy_tokens)
    if cfg.greedy_tokens and not greedy["all_equal"]:
        raise ParityError(f"greedy decoding differs from torch within {cfg.greedy_tokens} tokens: {greedy}")
    return {"meta": meta, "parity": parity, "greedy_parity": greedy, "exporter_errors": {}}


def apply(cfg: ExportConfig, model_dir: Path, out_dir: Path, *, task: str, texts: list[str]) -> Record:
    """Export the model at `model_dir` to `out_dir/model.onnx` (+ tokenizer, meta.json), parity-checked."""
    model = load_pretrained(str(model_dir), task)
    tok = load_tokenizer(str(model_dir))
    decoding, why_not = _decoding_graph(cfg, model, task)
    with atomic_dir(Path(out_dir)) as tmp:
        if decoding:
            info = _export_decoding(cfg, model, tok, Path(model_dir), tmp, task, texts)
            meta = info["meta"]
        else:
            info = export_model(model, tok, task, tmp / ONNX_NAME, texts, cfg)
            meta = {
                **model_meta(model, task, info["inputs"]),
                "exporter": info["exporter"],
                "opset": cfg.opset,
            }
            info["parity"] = check_parity(tmp / ONNX_NAME, info["wrapped"], tok, meta, texts, cfg)
            if task == "causal-lm":
                info["exporter_errors"]["genai"] = why_not
        # What evaluation and serving reduce the graph's outputs with; derived graphs copy it.
        meta[META_KEY] = read_pipeline(model_dir, task, model.config).to_json()
        write_meta(tmp, meta)
        tok.save_pretrained(tmp)
    prof = profile_apply(ProfileConfig(), model)
    return {
        **{k: prof[k] for k in ("params", "nonzero_params", "flops", "flops_terms")},
        "stage": "export",
        "path": str(Path(out_dir) / ONNX_NAME),
        "exporter": meta["exporter"],
        "exporter_errors": info["exporter_errors"],
        "parity": info["parity"],
        "greedy_parity": info.get("greedy_parity"),
        "kv_cache": "kv_cache" in meta,
        "size_mb": onnx_size_bytes(Path(out_dir) / ONNX_NAME) / 1e6,
        "pipeline": meta[META_KEY],
    }
