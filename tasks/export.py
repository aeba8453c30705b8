"""Export to ONNX (dynamo first, legacy TorchScript exporter as fallback) with a parity check.

The parity check runs ONNX Runtime against torch on real text at two (batch, sequence) shapes;
a breach raises ParityError, a per-variant failure the pipeline records and moves past.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from tasks import _structural as st
from tasks.base import Record, StepConfig, TaskError, atomic_dir, read_json, write_json
from tasks.families import detect, get_path, layers_of, num_heads
from tasks.load import load_pretrained, load_tokenizer
from tasks.profile import ProfileConfig
from tasks.profile import apply as profile_apply
from tasks.runtime import session

log = logging.getLogger(__name__)
ONNX_NAME = "model.onnx"
META_NAME = "meta.json"
_CANDIDATE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class ParityError(TaskError):
    """ONNX Runtime output differs from torch beyond the configured tolerance."""


class ExportConfig(StepConfig):
    """How to export and how close ONNX Runtime must stay to torch."""

    method: Literal["export"] = "export"
    exporter: Literal["auto", "dynamo", "legacy"] = "auto"  # auto: dynamo, then legacy on failure
    opset: int = Field(default=18, ge=17)
    atol: float = Field(default=1e-3, gt=0)
    min_cosine: float = Field(default=0.9999, gt=0, le=1)
    parity_shapes: tuple[tuple[int, int], ...] = ((1, 5), (3, 17))


class TaskWrapper(nn.Module):
    """Positional inputs in, one tensor out: the shape both exporters handle best."""

    def __init__(self, model: nn.Module, output: str, causal: bool) -> None:
        super().__init__()
        self.model, self.output, self.causal = model, output, causal

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kw: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        if self.causal:
            kw["use_cache"] = False
        return self.model(**kw)[self.output]


def output_name(task: str) -> str:
    """The model output slimline exports for a task."""
    return "last_hidden_state" if task == "feature-extraction" else "logits"


def input_names(model: nn.Module, tokenizer: Any) -> list[str]:
    """Inputs the model takes, in the wrapper's positional order."""
    names = [n for n in _CANDIDATE_INPUTS if n in getattr(tokenizer, "model_input_names", _CANDIDATE_INPUTS)]
    if "token_type_ids" in names and getattr(model.config, "type_vocab_size", 0) in (0, None):
        names.remove("token_type_ids")
    for required in ("input_ids", "attention_mask"):
        if required not in names:
            names.insert(_CANDIDATE_INPUTS.index(required), required)
    return names


def encode(tokenizer: Any, texts: list[str], batch: int, seq: int, names: list[str]) -> dict[str, np.ndarray]:
    """Real text tokenised to exactly (batch, seq), as int64 numpy arrays keyed by input name."""
    chosen = [texts[i % len(texts)] for i in range(batch)]
    enc = tokenizer(chosen, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    return {n: enc[n].astype(np.int64) if n in enc else np.zeros((batch, seq), np.int64) for n in names}


def torch_forward(wrapped: nn.Module, feed: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Run the wrapped model on a numpy feed."""
    with torch.no_grad():
        return wrapped(*[torch.from_numpy(feed[n]) for n in names]).float().numpy()


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, minimum per-sample cosine) between two batches of outputs."""
    a2, b2 = a.reshape(a.shape[0], -1).astype(np.float64), b.reshape(b.shape[0], -1).astype(np.float64)
    cos = (a2 * b2).sum(1) / (np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1) + 1e-12)
    return float(np.abs(a2 - b2).max()), float(cos.min())


def check_parity(
    onnx_path: Path, wrapped: nn.Module, tokenizer: Any, names: list[str], texts: list[str], cfg: ExportConfig
) -> list[Record]:
    """Compare ORT and torch at every parity shape; raise ParityError on a breach."""
    sess = session(onnx_path)
    results = []
    for batch, seq in cfg.parity_shapes:
        feed = encode(tokenizer, texts, batch, seq, names)
        got = sess.run(None, feed)[0]
        max_abs, cos = compare(got, torch_forward(wrapped, feed, names))
        results.append({"batch": batch, "seq": seq, "max_abs": max_abs, "cosine": cos})
        if not (max_abs <= cfg.atol and cos >= cfg.min_cosine):
            raise ParityError(
                f"parity breach at batch {batch} x seq {seq}: max_abs {max_abs:.3g} (atol {cfg.atol:g}), "
                f"cosine {cos:.6f} (min {cfg.min_cosine:g})"
            )
    return results


def _export_dynamo(
    wrapped: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    names: list[str],
    out: str,
    opset: int,
    big: bool,
) -> None:
    dyn = torch.export.Dim.DYNAMIC
    torch.onnx.export(
        wrapped,
        args,
        str(path),
        dynamo=True,
        opset_version=opset,
        input_names=names,
        output_names=[out],
        dynamic_shapes=tuple({0: dyn, 1: dyn} for _ in names),
        external_data=big,
        verbose=False,
    )


def _export_legacy(
    wrapped: nn.Module, args: tuple[torch.Tensor, ...], path: Path, names: list[str], out: str, opset: int
) -> None:
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, out]}
    torch.onnx.export(
        wrapped,
        args,
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=names,
        output_names=[out],
        dynamic_axes=axes,
    )


def export_model(
    model: nn.Module, tokenizer: Any, task: str, path: Path, texts: list[str], cfg: ExportConfig
) -> Record:
    """Export `model` to `path`, trying the configured exporter(s); returns which one was used."""
    names = input_names(model, tokenizer)
    wrapped = TaskWrapper(model, output_name(task), task == "causal-lm").eval()
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
                if name == "dynamo":
                    _export_dynamo(wrapped, args, path, names, output_name(task), cfg.opset, big)
                else:
                    _export_legacy(wrapped, args, path, names, output_name(task), cfg.opset)
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
    }


def onnx_size_bytes(onnx_path: Path) -> int:
    """Bytes of an ONNX graph plus its external-data files."""
    onnx_path = Path(onnx_path)
    return sum(p.stat().st_size for p in onnx_path.parent.glob(onnx_path.name + "*") if p.is_file())


def read_meta(onnx_path: Path) -> Record:
    """The meta.json written beside an exported graph (carried along by later graph stages)."""
    return read_json(Path(onnx_path).parent / META_NAME)


def copy_sidecars(src_dir: Path, dst_dir: Path) -> None:
    """Copy meta.json and the tokenizer files, everything but the graph, to a derived graph's folder."""
    for f in Path(src_dir).iterdir():
        if f.is_file() and not f.name.startswith(ONNX_NAME):
            shutil.copy2(f, Path(dst_dir) / f.name)


def feeds_for(onnx_path: Path, texts: list[str], batch: int, seq: int) -> dict[str, np.ndarray]:
    """A real-text feed for the graph at `onnx_path`, using the tokenizer stored beside it."""
    meta = read_meta(onnx_path)
    return encode(load_tokenizer(str(Path(onnx_path).parent)), texts, batch, seq, meta["inputs"])


def apply(cfg: ExportConfig, model_dir: Path, out_dir: Path, *, task: str, texts: list[str]) -> Record:
    """Export the model at `model_dir` to `out_dir/model.onnx` (+ tokenizer, meta.json), parity-checked."""
    model = load_pretrained(str(model_dir), task)
    tok = load_tokenizer(str(model_dir))
    with atomic_dir(Path(out_dir)) as tmp:
        info = export_model(model, tok, task, tmp / ONNX_NAME, texts, cfg)
        parity = check_parity(tmp / ONNX_NAME, info["wrapped"], tok, info["inputs"], texts, cfg)
        meta = {**model_meta(model, task, info["inputs"]), "exporter": info["exporter"], "opset": cfg.opset}
        write_json(tmp / META_NAME, meta)
        tok.save_pretrained(tmp)
    prof = profile_apply(ProfileConfig(), model)
    return {
        **{k: prof[k] for k in ("params", "nonzero_params", "flops")},
        "stage": "export",
        "path": str(Path(out_dir) / ONNX_NAME),
        "exporter": info["exporter"],
        "exporter_errors": info["exporter_errors"],
        "parity": parity,
        "size_mb": onnx_size_bytes(Path(out_dir) / ONNX_NAME) / 1e6,
    }
