"""Depth pruning: whole transformer layers leave the model (ShortGPT's Block Influence, or weights).

Importance of layer i:
- "activation": Block Influence (Men et al., 2024, "ShortGPT"), 1 - mean cosine similarity
  between the hidden state entering the layer and the one leaving it, over the real (non-padding)
  tokens of the calibration text. A layer that barely turns the residual stream scores near 0.
- "weight" (no data): the Frobenius norm of the layer's two output projections (attention output
  and FFN output), sqrt(|W_o|^2 + |W_ffn_out|^2). Both branches write into the residual stream only
  through these matrices, so small ones mean a small update; a cheap stand-in for Block
  Influence that ignores what the norms and the inputs do to that update.
The lowest-scoring layers are dropped. An explicit `drop` list skips scoring altogether.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from slimline.tasks import _structural as st
from slimline.tasks._heads import HEADS_KEY
from slimline.tasks.base import LAX, Record, TaskError
from slimline.tasks.families import Family, detect, get_path, layers_of
from slimline.tasks.pruning._importance import StructuredCut, require_batches
from slimline.tasks.techniques import register_technique

# Config key with the original index of every kept layer: lets distillation pair a student layer
# with the teacher layer it came from (hidden states no longer line up one to one).
LAYERS_KEY = "slimline_layers_kept"
# Per-layer config lists that must lose the entries of removed layers (Qwen2's attention kinds,
# and the head counts slimline records for BERT, DistilBERT and GPT-2; see tasks.load).
PER_LAYER_KEYS = ("layer_types", HEADS_KEY)
# The config attribute holding the layer count, by family (num_hidden_layers is an alias of the
# other two in their configs, but the saved config.json has the family's own name).
LAYER_COUNT = {
    "bert": "num_hidden_layers",
    "distilbert": "n_layers",
    "gpt2": "n_layer",
    "llama": "num_hidden_layers",
}


class LayersConfig(StructuredCut):
    """Remove `amount` of the transformer layers (the least important), or the layers listed in `drop`."""

    example: ClassVar = {"amount": 0.25}
    method: Literal["layers"] = "layers"
    list_fields: ClassVar = frozenset({"drop"})
    amount: float | None = Field(default=None, gt=0.0, lt=1.0)
    drop: Annotated[tuple[Annotated[int, Field(ge=0)], ...], LAX] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> LayersConfig:
        if (self.amount is None) == (self.drop is None):
            raise ValueError(
                "give exactly one of amount (the fraction of layers to drop) and drop (layer indices)"
            )
        if self.drop is not None:
            if not self.drop:
                raise ValueError("drop: list at least one layer index")
            if len(set(self.drop)) != len(self.drop):
                raise ValueError(f"drop: repeated layer index in {list(self.drop)}")
        return self

    def needs_calibration(self) -> bool:
        return self.drop is None and self.importance == "activation"


def weight_scores(model: nn.Module, fam: Family) -> list[float]:
    """Data-free layer importance: the norm of what each layer can write into the residual stream."""
    return [
        math.hypot(*(float(st.out_major(get_path(layer, p)).norm()) for p in (fam.o, fam.ffn_out)))
        for layer in layers_of(model, fam)
    ]


def _hidden(value: Any) -> Tensor:
    """A layer's hidden state from its output (a tensor, or a tuple led by one in older layers)."""
    return value[0] if isinstance(value, tuple | list) else value


def block_influence(model: nn.Module, fam: Family, batches: list[dict[str, Tensor]]) -> list[float]:
    """1 - mean cosine(input, output) of every layer over the real tokens of `batches` (ShortGPT).

    Hooks on the layers themselves, not `output_hidden_states`: some models hand back their last
    hidden state after the final norm, which is not what the last layer produced.
    """
    layers = list(layers_of(model, fam))
    sums = [0.0] * len(layers)
    count = 0
    keep: Tensor | None = None

    def hook(i: int) -> Callable[..., None]:
        def fn(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            assert keep is not None
            x = _hidden(args[0] if args else kwargs["hidden_states"]).detach()
            y = _hidden(out).detach()
            cos = F.cosine_similarity(x.float(), y.float(), dim=-1).reshape(-1)[keep]
            sums[i] += float(cos.double().sum())

        return fn

    handles = [m.register_forward_hook(hook(i), with_kwargs=True) for i, m in enumerate(layers)]
    try:
        with torch.no_grad():
            for b in batches:
                keep = b["attention_mask"].reshape(-1).bool()
                count += int(keep.sum())
                model(**b)
    finally:
        for h in handles:
            h.remove()
    return [1.0 - s / max(count, 1) for s in sums]


def remove_layers(model: nn.Module, fam: Family, drop: list[int]) -> list[int]:
    """Take the layers at `drop` out of the model and its config, in place; returns the kept indices."""
    layers = layers_of(model, fam)
    n = len(layers)
    kept = [i for i in range(n) if i not in set(drop)]
    config = model.config
    if getattr(config, "scale_attn_by_inverse_layer_idx", False) and kept != list(range(len(kept))):
        # GPT-2 fixes that scale from the layer index when it builds a layer: a reloaded model
        # would scale a moved layer differently from the one pruned here.
        raise TaskError("layers: cannot move layers of a model with scale_attn_by_inverse_layer_idx")
    parent_path, _, name = fam.layers.rpartition(".")
    base = getattr(model, "base_model", model)
    parent = get_path(base, parent_path) if parent_path else base
    setattr(parent, name, nn.ModuleList([layers[i] for i in kept]))
    if isinstance(getattr(parent, "n_layers", None), int):  # DistilBERT's Transformer keeps a count
        parent.n_layers = len(kept)
    # The KV cache is indexed by each attention's layer_idx: it must be the layer's new position.
    for new, i in enumerate(kept):
        for mod in layers[i].modules():
            if isinstance(getattr(mod, "layer_idx", None), int):
                mod.layer_idx = new
    for key in PER_LAYER_KEYS:
        values = getattr(config, key, None)
        if isinstance(values, list) and len(values) == n:
            setattr(config, key, [values[i] for i in kept])
    setattr(config, LAYER_COUNT[fam.name], len(kept))
    before = getattr(config, LAYERS_KEY, None)  # set when the model was pruned in depth before
    before = before if isinstance(before, list) and len(before) == n else list(range(n))
    setattr(config, LAYERS_KEY, [int(before[i]) for i in kept])
    return kept


def prune_layers(
    model: nn.Module, cfg: LayersConfig, batches: list[dict[str, Tensor]] | None = None
) -> Record:
    """Drop the least important layers (or the listed ones); returns counts, removed indices, scores."""
    fam = detect(model)
    n = len(layers_of(model, fam))
    scores: list[float] | None = None
    if cfg.drop is not None:
        drop = sorted(cfg.drop)
        bad = [i for i in drop if i >= n]
        if bad:
            raise TaskError(f"layers: drop {bad} out of range; the model has layers 0..{n - 1}")
        if len(drop) >= n:
            raise TaskError(f"layers: drop {drop} removes all {n} layers; keep at least one")
    else:
        assert cfg.amount is not None
        if cfg.importance == "activation":
            scores = block_influence(model, fam, require_batches(batches, "layers"))
        else:
            scores = weight_scores(model, fam)
        n_drop = min(round(cfg.amount * n), n - 1)  # the model keeps at least one layer
        drop = st.lowest(torch.tensor(scores), n_drop)
    kept = remove_layers(model, fam, drop)
    return {"layers_before": n, "layers_after": len(kept), "layers_removed": drop, "layer_scores": scores}


@register_technique(LayersConfig)
def apply(cfg: LayersConfig, model: nn.Module, batches: list[dict[str, Tensor]] | None = None) -> Record:
    """Prune in place; the record has the layer counts, the removed indices and the scores (if scored)."""
    return prune_layers(model, cfg, batches)
