"""FFN-channel pruning: the least important intermediate channels leave every layer."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from slimline.tasks import _structural as st
from slimline.tasks.base import Record
from slimline.tasks.families import detect, get_path, layers_of
from slimline.tasks.pruning._importance import StructuredCut, input_abs_means, require_batches
from slimline.tasks.techniques import register_technique


class FFNConfig(StructuredCut):
    """Remove `amount` of the FFN intermediate channels in every layer."""

    example: ClassVar = {"amount": 0.25}
    method: Literal["ffn"] = "ffn"
    amount: float = Field(gt=0.0, lt=1.0)


def prune_ffn(model: nn.Module, cfg: FFNConfig, batches: list[dict[str, Tensor]] | None = None) -> Record:
    """Remove the least important FFN channels, the same number in every layer (one config width).

    The record lists the removed channels per layer, for callers in memory (`apply` leaves
    them out of the small stage record).
    """
    fam = detect(model)
    layers = list(layers_of(model, fam))
    width = st.out_major(get_path(layers[0], fam.ffn_out)).shape[1]
    keep_n = max(1, width - round(cfg.amount * width))
    acts = None
    if cfg.importance == "activation":
        paths = [f"{fam.layers}.{i}.{fam.ffn_out}" for i in range(len(layers))]
        acts = input_abs_means(model, paths, require_batches(batches, "ffn"))
    removed = []
    for i, layer in enumerate(layers):
        down = st.out_major(get_path(layer, fam.ffn_out))
        if acts is not None:
            scores = acts[i] * down.norm(dim=0)
        else:
            scores = st.channel_scores_by_weight([st.out_major(get_path(layer, p)) for p in fam.ffn_in], down)
        drop = set(st.lowest(scores, width - keep_n))
        removed.append(sorted(drop))
        idx = torch.tensor([c for c in range(width) if c not in drop], dtype=torch.long)
        for p in fam.ffn_in:
            st.keep_out(get_path(layer, p), idx)
        st.keep_in(get_path(layer, fam.ffn_out), idx)
    setattr(model.config, fam.ffn_attr, keep_n)
    return {"ffn_before": width, "ffn_after": keep_n, "channels_removed": removed}


@register_technique(FFNConfig)
def apply(cfg: FFNConfig, model: nn.Module, batches: list[dict[str, Tensor]] | None = None) -> Record:
    """Prune in place; the record has the widths before and after."""
    rec = prune_ffn(model, cfg, batches)
    del rec["channels_removed"]
    return rec
