"""Attention-head pruning: whole heads (whole KV groups under GQA) leave the weight matrices."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from torch import Tensor, nn

from slimline.tasks import _heads
from slimline.tasks import _structural as st
from slimline.tasks.base import Record
from slimline.tasks.families import detect, get_path, layers_of
from slimline.tasks.pruning._importance import StructuredCut, input_abs_means, require_batches
from slimline.tasks.techniques import register_technique


class HeadsConfig(StructuredCut):
    """Remove `amount` of the attention heads (whole KV groups under GQA) in every layer."""

    example: ClassVar = {"amount": 0.5}
    method: Literal["heads"] = "heads"
    amount: float = Field(gt=0.0, lt=1.0)


def prune_heads(model: nn.Module, cfg: HeadsConfig, batches: list[dict[str, Tensor]] | None = None) -> Record:
    """Remove the least important heads (KV groups) in every layer; returns before/after counts."""
    fam = detect(model)
    layers = list(layers_of(model, fam))
    acts = None
    if cfg.importance == "activation":
        paths = [f"{fam.layers}.{i}.{fam.o}" for i in range(len(layers))]
        acts = input_abs_means(model, paths, require_batches(batches, "heads"))
    before, after, removed = [], [], []
    head_dim = 0
    for i, layer in enumerate(layers):
        n_q, n_kv, head_dim = _heads.head_geometry(model, fam, layer)
        o = st.out_major(get_path(layer, fam.o))
        if acts is not None:
            scores = st.group_scores_by_activation(acts[i], o, n_q, n_kv, head_dim)
        else:
            scores = st.group_scores_by_weight(*_heads.qkv(layer, fam, n_q, head_dim), o, n_q, n_kv, head_dim)
        n_drop = min(round(cfg.amount * n_kv), n_kv - 1)  # a layer keeps at least one group
        drop = st.lowest(scores, n_drop)
        before.append(n_q)
        removed.append(drop)
        after.append(_heads.remove_groups(layer, fam, drop, n_q, n_kv, head_dim))
    _heads.set_head_config(model, fam, after, head_dim)
    return {"heads_before": before, "heads_after": after, "groups_removed": removed, "head_dim": head_dim}


@register_technique(HeadsConfig)
def apply(cfg: HeadsConfig, model: nn.Module, batches: list[dict[str, Tensor]] | None = None) -> Record:
    """Prune in place; the record has the head counts before and after, per layer."""
    return prune_heads(model, cfg, batches)
