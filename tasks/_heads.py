"""Head surgery, in one place: the geometry of a layer's attention and the removal of KV groups.

Pruning uses it to cut heads; loading uses it to rebuild the skeleton of a model whose config
cannot express its head counts (BERT, DistilBERT and GPT-2 in transformers 5; see tasks.load).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slimline.tasks import _structural as st
from slimline.tasks.families import Family, detect, get_path, layers_of, num_heads

# Config key that records per-layer head counts for families whose config cannot express them.
HEADS_KEY = "slimline_heads_per_layer"


def head_geometry(model: nn.Module, fam: Family, layer: nn.Module) -> tuple[int, int, int]:
    """(query heads, kv heads, head_dim) of one layer as it is now."""
    n0 = num_heads(model, fam)
    head_dim = int(getattr(model.config, "head_dim", None) or model.config.hidden_size // n0)
    o_in = st.out_major(get_path(layer, fam.o)).shape[1]
    n_q = o_in // head_dim
    n_kv = n_q
    if fam.kv_heads_attr:
        ratio = n0 // int(getattr(model.config, fam.kv_heads_attr) or n0)
        n_kv = n_q // ratio
    return n_q, n_kv, head_dim


def qkv(layer: nn.Module, fam: Family, n_q: int, head_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """The q, k and v weights of a layer as [out, in] matrices (GPT-2's fused one split in three)."""
    if fam.fused_qkv:
        w = st.out_major(get_path(layer, fam.q))
        e = n_q * head_dim
        return w[:e], w[e : 2 * e], w[2 * e :]
    return tuple(st.out_major(get_path(layer, p)) for p in (fam.q, fam.k, fam.v))  # type: ignore[return-value]


def remove_groups(
    layer: nn.Module, fam: Family, groups: list[int], n_q: int, n_kv: int, head_dim: int
) -> int:
    """Physically drop KV groups (single heads under MHA) from one layer; returns heads kept."""
    r = n_q // n_kv
    kept_groups = [g for g in range(n_kv) if g not in set(groups)]
    kept_heads = [g * r + i for g in kept_groups for i in range(r)]
    q_idx = st.head_channels(kept_heads, head_dim)
    kv_idx = st.head_channels(kept_groups, head_dim)
    if fam.fused_qkv:
        e = n_q * head_dim
        st.keep_out(get_path(layer, fam.q), torch.cat([q_idx, q_idx + e, q_idx + 2 * e]))
    else:
        st.keep_out(get_path(layer, fam.q), q_idx)
        st.keep_out(get_path(layer, fam.k), kv_idx)
        st.keep_out(get_path(layer, fam.v), kv_idx)
    st.keep_in(get_path(layer, fam.o), q_idx)
    # Keep the attention module's own bookkeeping true to its new shape (GPT-2 splits its fused
    # qkv output by split_size; the others reshape with -1 heads and only need honest attributes).
    attn = get_path(layer, fam.q.rsplit(".", 1)[0])
    for name in ("num_attention_heads", "num_heads", "n_heads"):
        if isinstance(getattr(attn, name, None), int):
            setattr(attn, name, len(kept_heads))
    if isinstance(getattr(attn, "all_head_size", None), int):
        attn.all_head_size = len(kept_heads) * head_dim
    if fam.fused_qkv:
        attn.split_size = len(kept_heads) * head_dim
    return len(kept_heads)


def set_head_config(model: nn.Module, fam: Family, per_layer: list[int], head_dim: int) -> None:
    """Write the new head counts into the config, the way the family's config can say them."""
    n0 = num_heads(model, fam)
    if fam.head_dim_in_config:
        # Llama-like models read head_dim from the config, so the plain config can say it.
        ratio = n0 // int(getattr(model.config, fam.kv_heads_attr or fam.heads_attr) or n0)
        model.config.head_dim = head_dim
        setattr(model.config, fam.heads_attr, per_layer[0])
        if fam.kv_heads_attr:
            setattr(model.config, fam.kv_heads_attr, per_layer[0] // ratio)
    else:
        setattr(model.config, HEADS_KEY, per_layer)


def shrink_heads_to(model: nn.Module, per_layer: list[int]) -> None:
    """Give a freshly built model the recorded per-layer head counts (weights are loaded after)."""
    fam = detect(model)
    for layer, keep in zip(layers_of(model, fam), per_layer, strict=True):
        n_q, n_kv, hd = head_geometry(model, fam, layer)
        r = n_q // n_kv
        remove_groups(layer, fam, list(range(keep // r, n_kv)), n_q, n_kv, hd)
