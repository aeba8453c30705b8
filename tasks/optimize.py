"""ONNX Runtime transformer graph optimisation (attention, LayerNorm, GELU fusions).

The fused graph must agree with the unfused one: both run through ONNX Runtime on real text.
If the family's fusions crash or break agreement we fall back to ORT's generic graph
optimisations, and if those do too, to the exported graph unchanged; the record says why.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from slimline.tasks.base import LAX, Record, StepConfig, atomic_dir
from slimline.tasks.graph import ONNX_NAME, compare, copy_sidecars, feeds_for, onnx_size_bytes, read_meta
from slimline.tasks.runtime import session

# The ORT optimizer's model types by slimline family (Llama-likes use the decoder fusions).
ORT_MODEL_TYPE = {"bert": "bert", "distilbert": "bert", "gpt2": "gpt2", "llama": "gpt2"}


class OptimizeConfig(StepConfig):
    """Graph optimisation settings and the tolerance of fused vs unfused graphs."""

    method: Literal["optimize"] = "optimize"
    enabled: bool = True
    atol: float = Field(default=1e-3, gt=0)
    min_cosine: float = Field(default=0.9999, gt=0, le=1)
    parity_shape: Annotated[tuple[int, int], LAX] = (2, 16)


def _optimize(src: Path, dst: Path, meta: Record, only_onnxruntime: bool) -> dict[str, int]:
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(
        str(src),
        model_type=ORT_MODEL_TYPE.get(meta["family"], "bert"),
        # The fusion reads hidden_size as the attention width (heads x head_dim); after head
        # pruning that is smaller than the model's width. Parity is checked below either way.
        num_heads=meta["num_heads"],
        hidden_size=meta["num_heads"] * meta["head_dim"],
        only_onnxruntime=only_onnxruntime,
        opt_level=1 if only_onnxruntime else None,
    )
    opt.save_model_to_file(str(dst))
    return {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}


def apply(cfg: OptimizeConfig, onnx_path: Path, out_dir: Path, *, texts: list[str]) -> Record:
    """Optimise the graph at `onnx_path` into `out_dir/model.onnx`; records fused-operator counts."""
    meta = read_meta(onnx_path)
    batch, seq = cfg.parity_shape
    feed = feeds_for(onnx_path, texts, batch, seq)
    reference = session(onnx_path).run(None, feed)[0]
    # ONNX Runtime GenAI's builder emits graphs already fused for decoding (GroupQueryAttention,
    # SkipSimplifiedLayerNorm, rotary embeddings): the transformer optimizer has nothing to add.
    attempts = [False, True] if cfg.enabled and not meta.get("kv_cache") else []
    notes: list[str] = []
    with atomic_dir(Path(out_dir)) as tmp:
        copy_sidecars(Path(onnx_path).parent, tmp)
        dst = tmp / ONNX_NAME
        fused: dict[str, int] = {}
        mode = "none"
        for only_ort in attempts:
            name = "generic" if only_ort else "fusion"
            try:
                fused = _optimize(Path(onnx_path), dst, meta, only_ort)
            except Exception as exc:  # ORT's fusions have graph-pattern bugs; the exported graph still runs
                notes.append(f"{name}: optimizer raised {type(exc).__name__}: {exc}")
                fused = {}
                continue
            max_abs, cos = compare(session(dst).run(None, feed)[0], reference)
            if max_abs <= cfg.atol and cos >= cfg.min_cosine:
                mode = "ort-generic" if only_ort else "fusion"
                break
            notes.append(f"{name}: max_abs {max_abs:.3g}, cosine {cos:.6f}")
            fused = {}
        else:
            # Nothing passed: ship the exported graph unchanged (correct, just unfused); notes say why.
            for f in Path(onnx_path).parent.glob(ONNX_NAME + "*"):  # the graph and its external data
                shutil.copy2(f, tmp / f.name)
    return {
        "stage": "optimize",
        "path": str(Path(out_dir) / ONNX_NAME),
        "mode": mode,
        "fused_operators": fused,
        "notes": notes,
        "size_mb": onnx_size_bytes(Path(out_dir) / ONNX_NAME) / 1e6,
    }
