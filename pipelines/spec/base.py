"""The one strict base of every spec block (the spec, its search and serve blocks)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Frozen, no unknown keys, no type coercion: a typo or `per_channel: "yes"` is an error.

    NaN and infinity are never meaningful settings, and a NaN bound would disable its constraint.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)
