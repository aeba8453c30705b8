"""Static profile of a model: parameters, non-zero parameters, analytic FLOPs and bytes on disk."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from torch import nn

from slimline.tasks import _structural as st
from slimline.tasks.base import Record, StepConfig, dir_size_bytes
from slimline.tasks.families import block_linears, detect, get_path, layers_of


class ProfileConfig(StepConfig):
    """Sequence length at which FLOPs are counted."""

    method: Literal["profile"] = "profile"
    sequence_length: int = 128


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters), tied weights counted once."""
    seen: set[int] = set()
    total = nonzero = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        nonzero += int((p != 0).sum())
    return total, nonzero


def block_flop_terms(model: nn.Module) -> tuple[int, int]:
    """(per token, per token pair): one sequence of L tokens costs per_token·L + per_pair·L² FLOPs."""
    fam = detect(model)
    per_token = sum(2 * math.prod(st.out_major(mod).shape) for _, mod in block_linears(model, fam))
    per_pair = sum(4 * st.out_major(get_path(layer, fam.o)).shape[1] for layer in layers_of(model, fam))
    return per_token, per_pair


def block_flops(model: nn.Module, sequence_length: int) -> int:
    """Analytic FLOPs (2 per multiply-add) of one sequence through the transformer blocks.

    Every block matrix costs 2·L·in·out; attention adds QKᵀ and AV, 2·2·L²·(heads·head_dim) per
    layer, read from the actual (possibly pruned) o-projection width. Embeddings, norms and
    the task head are left out: they are a small, constant share and not what pruning changes.
    Unstructured zeros are counted: dense kernels still multiply them.
    """
    per_token, per_pair = block_flop_terms(model)
    return per_token * sequence_length + per_pair * sequence_length**2


def apply(cfg: ProfileConfig, model: nn.Module, artifact: Path | None = None) -> Record:
    """Profile a loaded model (and the size of its artifact, when given)."""
    params, nonzero = count_params(model)
    rec: Record = {
        "params": params,
        "nonzero_params": nonzero,
        "flops": block_flops(model, cfg.sequence_length),
        "flops_terms": list(block_flop_terms(model)),  # the FLOPs at any other shape
        "sequence_length": cfg.sequence_length,
    }
    if artifact is not None:
        rec["size_mb"] = dir_size_bytes(Path(artifact)) / 1e6
    return rec
