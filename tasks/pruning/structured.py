"""Structured cuts together: whole layers, then attention heads, then FFN channels, in one pruned model."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator
from torch import Tensor, nn

from slimline.tasks.base import Record
from slimline.tasks.pruning import ffn, heads, layers
from slimline.tasks.pruning._importance import StructuredCut
from slimline.tasks.techniques import register_technique

Part = layers.LayersConfig | heads.HeadsConfig | ffn.FFNConfig


class StructuredConfig(StructuredCut):
    """Remove `layers` of the layers, then `heads` of the attention heads and `ffn` of the FFN channels."""

    example: ClassVar = {"heads": 0.5, "ffn": 0.25}
    method: Literal["structured"] = "structured"
    layers: float | None = Field(default=None, gt=0.0, lt=1.0)
    heads: float | None = Field(default=None, gt=0.0, lt=1.0)
    ffn: float | None = Field(default=None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _some_cut(self) -> StructuredConfig:
        if self.heads is None and self.ffn is None and self.layers is None:
            raise ValueError("give at least one of layers, heads and ffn (the fraction each cut removes)")
        return self

    def to_json(self) -> dict[str, Any]:
        # Cuts left out are left out of the JSON too: the digest (the stage id) of a heads+ffn
        # config stays what it was before `layers` existed, so cached prune stages are reused.
        return self.model_dump(mode="json", exclude_none=True)

    def parts(self) -> list[Part]:
        """The cuts this config stands for, in the order they apply (layers first: the later cuts
        then score and cut only the layers that stay)."""
        out: list[Part] = []
        if self.layers is not None:
            out.append(layers.LayersConfig(amount=self.layers, importance=self.importance))
        if self.heads is not None:
            out.append(heads.HeadsConfig(amount=self.heads, importance=self.importance))
        if self.ffn is not None:
            out.append(ffn.FFNConfig(amount=self.ffn, importance=self.importance))
        return out


_APPLY = {"layers": layers.apply, "heads": heads.apply, "ffn": ffn.apply}


@register_technique(StructuredConfig)
def apply(cfg: StructuredConfig, model: nn.Module, batches: list[dict[str, Tensor]] | None = None) -> Record:
    """Cut layers, heads, then FFN channels (those given); one record with all of them."""
    rec: Record = {}
    for part in cfg.parts():
        rec.update(_APPLY[part.method](part, model, batches))
    return rec
