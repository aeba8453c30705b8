"""Pruning: unstructured magnitude (global or per layer), N:M, attention heads and FFN channels.

Structured pruning physically removes heads and channels from the weight matrices (transformers 5
has no `prune_heads`) and updates the config, so the saved model is genuinely smaller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from tasks import _sparsity as sp
from tasks import _structural as st
from tasks.base import Record, StepConfig, TaskError, atomic_dir
from tasks.families import Family, block_linears, detect, get_path, layers_of, num_heads
from tasks.load import HEADS_KEY, load_pretrained, load_tokenizer, save_pretrained

Importance = Literal["weight", "activation"]


class MagnitudeConfig(StepConfig):
    """Unstructured magnitude pruning of the block weights; `pattern: "2:4"` gives N:M sparsity."""

    method: Literal["magnitude"] = "magnitude"
    sparsity: float | None = Field(default=None, gt=0.0, lt=1.0)
    pattern: str | None = Field(default=None, pattern=r"^\d+:\d+$")
    scope: Literal["global", "layer"] = "global"

    @model_validator(mode="after")
    def _consistent(self) -> MagnitudeConfig:
        if self.pattern:
            n, m = (int(x) for x in self.pattern.split(":"))
            if not 0 < n < m:
                raise ValueError(f"pattern {self.pattern!r}: expected N:M with 0 < N < M")
            if self.sparsity is not None and abs(self.sparsity - (1 - n / m)) > 1e-9:
                raise ValueError(
                    f"sparsity {self.sparsity} contradicts pattern {self.pattern} ({1 - n / m:g})"
                )
        return self

    @property
    def target_sparsity(self) -> float:
        """The sparsity the result must have."""
        if self.pattern:
            n, m = (int(x) for x in self.pattern.split(":"))
            return 1 - n / m
        return 0.5 if self.sparsity is None else self.sparsity


class HeadsConfig(StepConfig):
    """Remove `amount` of the attention heads (whole KV groups under GQA) in every layer."""

    method: Literal["heads"] = "heads"
    amount: float = Field(gt=0.0, lt=1.0)
    importance: Importance = "weight"


class FFNConfig(StepConfig):
    """Remove `amount` of the FFN intermediate channels in every layer."""

    method: Literal["ffn"] = "ffn"
    amount: float = Field(gt=0.0, lt=1.0)
    importance: Importance = "weight"


class StructuredConfig(StepConfig):
    """Heads and FFN channels together: the two structured cuts in one pruned model."""

    method: Literal["structured"] = "structured"
    heads: float = Field(gt=0.0, lt=1.0)
    ffn: float = Field(gt=0.0, lt=1.0)
    importance: Importance = "weight"

    def parts(self) -> tuple[HeadsConfig, FFNConfig]:
        """The heads cut and the FFN cut this config stands for."""
        return (
            HeadsConfig(amount=self.heads, importance=self.importance),
            FFNConfig(amount=self.ffn, importance=self.importance),
        )


PruneConfig = MagnitudeConfig | HeadsConfig | FFNConfig | StructuredConfig
# Configs that change the shapes of the weights: what distillation is for.
STRUCTURED = (HeadsConfig, FFNConfig, StructuredConfig)


# ---------------------------------------------------------------- unstructured
def prune_magnitude(model: nn.Module, cfg: MagnitudeConfig) -> float:
    """Zero block weights in place; returns the achieved sparsity over those weights."""
    fam = detect(model)
    mods = [m for _, m in block_linears(model, fam)]
    with torch.no_grad():
        if cfg.pattern:
            n, m = (int(x) for x in cfg.pattern.split(":"))
            for mod in mods:
                w = st.out_major(mod)
                if w.shape[1] % m:
                    raise TaskError(
                        f"N:M {cfg.pattern}: a weight has input width {w.shape[1]}, not divisible by {m}"
                    )
                mask = sp.nm_mask(w, n, m)
                mod.weight.mul_(mask.t() if st.is_conv1d(mod) else mask)
        elif cfg.scope == "global":
            for mod, mask in zip(
                mods, sp.global_magnitude_masks([x.weight for x in mods], cfg.target_sparsity), strict=True
            ):
                mod.weight.mul_(mask)
        else:
            for mod in mods:
                mod.weight.mul_(sp.magnitude_mask(mod.weight, cfg.target_sparsity))
    return sp.sparsity_of([x.weight for x in mods])


# ---------------------------------------------------------------- heads
def _head_geometry(model: nn.Module, fam: Family, layer: nn.Module) -> tuple[int, int, int]:
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


def _qkv(layer: nn.Module, fam: Family, n_q: int, head_dim: int) -> tuple[Tensor, Tensor, Tensor]:
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


def _set_head_config(model: nn.Module, fam: Family, per_layer: list[int], head_dim: int) -> None:
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
        n_q, n_kv, hd = _head_geometry(model, fam, layer)
        r = n_q // n_kv
        remove_groups(layer, fam, list(range(keep // r, n_kv)), n_q, n_kv, hd)


def _input_abs_means(model: nn.Module, paths: list[str], batches: list[dict[str, Tensor]]) -> list[Tensor]:
    """Mean |input| per channel of each module at `paths`, over calibration batches (padding excluded)."""
    mods = [get_path(getattr(model, "base_model", model), p) for p in paths]
    sums: list[Tensor | None] = [None] * len(mods)
    count = [0]
    mask_holder: dict[str, Tensor] = {}

    def hook(i: int):
        def fn(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0].detach().abs()
            keep = mask_holder["mask"].reshape(-1).bool()
            x = x.reshape(-1, x.shape[-1])[keep].sum(0)
            sums[i] = x if sums[i] is None else sums[i] + x

        return fn

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(mods)]
    try:
        with torch.no_grad():
            for b in batches:
                mask_holder["mask"] = b["attention_mask"]
                count[0] += int(b["attention_mask"].sum())
                model(**b)
    finally:
        for h in handles:
            h.remove()
    return [s / max(count[0], 1) for s in sums]  # type: ignore[operator]


def prune_heads(model: nn.Module, cfg: HeadsConfig, batches: list[dict[str, Tensor]] | None = None) -> Record:
    """Remove the least important heads (KV groups) in every layer; returns before/after counts."""
    fam = detect(model)
    layers = list(layers_of(model, fam))
    acts = None
    if cfg.importance == "activation":
        if not batches:
            raise TaskError("heads importance 'activation' needs calibration text")
        acts = _input_abs_means(model, [f"{fam.layers}.{i}.{fam.o}" for i in range(len(layers))], batches)
    before, after, removed = [], [], []
    head_dim = 0
    for i, layer in enumerate(layers):
        n_q, n_kv, head_dim = _head_geometry(model, fam, layer)
        o = st.out_major(get_path(layer, fam.o))
        if acts is not None:
            scores = st.group_scores_by_activation(acts[i], o, n_q, n_kv, head_dim)
        else:
            scores = st.group_scores_by_weight(*_qkv(layer, fam, n_q, head_dim), o, n_q, n_kv, head_dim)
        n_drop = min(round(cfg.amount * n_kv), n_kv - 1)  # a layer keeps at least one group
        drop = st.lowest(scores, n_drop)
        before.append(n_q)
        removed.append(drop)
        after.append(remove_groups(layer, fam, drop, n_q, n_kv, head_dim))
    _set_head_config(model, fam, after, head_dim)
    return {"heads_before": before, "heads_after": after, "groups_removed": removed, "head_dim": head_dim}


# ---------------------------------------------------------------- FFN
def prune_ffn(model: nn.Module, cfg: FFNConfig, batches: list[dict[str, Tensor]] | None = None) -> Record:
    """Remove the least important FFN channels, the same number in every layer (one config width)."""
    fam = detect(model)
    layers = list(layers_of(model, fam))
    width = st.out_major(get_path(layers[0], fam.ffn_out)).shape[1]
    keep_n = max(1, width - round(cfg.amount * width))
    acts = None
    if cfg.importance == "activation":
        if not batches:
            raise TaskError("ffn importance 'activation' needs calibration text")
        acts = _input_abs_means(
            model, [f"{fam.layers}.{i}.{fam.ffn_out}" for i in range(len(layers))], batches
        )
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
    # Channel lists are for callers in memory; apply() leaves them out of the (small) record.
    return {"ffn_before": width, "ffn_after": keep_n, "channels_removed": removed}


# ---------------------------------------------------------------- stage
def calibration_batches(
    tokenizer: object, texts: list[str], max_length: int, batch_size: int = 8
) -> list[dict[str, Tensor]]:
    """Tokenised calibration batches for activation-based importance."""
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[i : i + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
        )  # type: ignore[operator]
        out.append(dict(enc))
    return out


def apply(
    cfg: PruneConfig,
    model_dir: Path,
    out_dir: Path,
    *,
    task: str,
    calibration: list[str] | None = None,
    max_length: int = 128,
) -> Record:
    """Prune the model at `model_dir` and save the result (reloadable at its new size) to `out_dir`."""
    from tasks.profile import count_params

    model = load_pretrained(str(model_dir), task)
    tok = load_tokenizer(str(model_dir))
    params_before, _ = count_params(model)
    batches = calibration_batches(tok, calibration, max_length) if calibration else None
    rec: Record = {"stage": "prune", "method": cfg.method, "config": cfg.to_json()}
    if isinstance(cfg, MagnitudeConfig):
        rec["sparsity_target"] = cfg.target_sparsity
        rec["sparsity"] = prune_magnitude(model, cfg)
    else:
        heads, ffn = cfg.parts() if isinstance(cfg, StructuredConfig) else (cfg, cfg)
        if isinstance(heads, HeadsConfig):
            rec.update(prune_heads(model, heads, batches))
        if isinstance(ffn, FFNConfig):
            rec.update({k: v for k, v in prune_ffn(model, ffn, batches).items() if k != "channels_removed"})
    params_after, nonzero = count_params(model)
    with atomic_dir(Path(out_dir)) as tmp:
        save_pretrained(model, tok, tmp)
    rec.update(
        {
            "path": str(out_dir),
            "params_before": params_before,
            "params": params_after,
            "nonzero_params": nonzero,
        }
    )
    return rec
