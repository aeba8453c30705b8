"""Heads and FFN channels together: the two structured cuts in one pruned model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from ..base import Record
from . import ffn, heads
from ._importance import StructuredCut


class StructuredConfig(StructuredCut):
    """Remove `heads` of the attention heads and `ffn` of the FFN channels in every layer."""

    method: Literal["structured"] = "structured"
    heads: float = Field(gt=0.0, lt=1.0)
    ffn: float = Field(gt=0.0, lt=1.0)

    def parts(self) -> tuple[heads.HeadsConfig, ffn.FFNConfig]:
        """The heads cut and the FFN cut this config stands for."""
        return (
            heads.HeadsConfig(amount=self.heads, importance=self.importance),
            ffn.FFNConfig(amount=self.ffn, importance=self.importance),
        )


CONFIG = StructuredConfig


def apply(cfg: StructuredConfig, model: nn.Module, batches: list[dict[str, Tensor]] | None = None) -> Record:
    """Cut heads, then FFN channels; one record with both."""
    h, f = cfg.parts()
    return {**heads.apply(h, model, batches), **ffn.apply(f, model, batches)}
