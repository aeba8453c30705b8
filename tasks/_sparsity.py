"""Pure tensor functions for unstructured and N:M sparsity masks (True = keep)."""

from __future__ import annotations

import torch
from torch import Tensor


def _n_pruned(numel: int, sparsity: float) -> int:
    return round(sparsity * numel)


def magnitude_mask(weight: Tensor, sparsity: float) -> Tensor:
    """Keep-mask that zeroes exactly round(sparsity * numel) smallest-|w| entries.

    Index-based (topk) rather than a threshold, so ties at the threshold cannot make the
    achieved sparsity drift from the one asked for.
    """
    flat = weight.detach().abs().flatten()
    k = _n_pruned(flat.numel(), sparsity)
    mask = torch.ones_like(flat, dtype=torch.bool)
    if k > 0:
        mask[torch.topk(flat, k, largest=False, sorted=False).indices] = False
    return mask.view_as(weight)


def global_magnitude_masks(weights: list[Tensor], sparsity: float) -> list[Tensor]:
    """Keep-masks for several matrices ranked together, zeroing exactly round(sparsity * total)."""
    flat = torch.cat([w.detach().abs().flatten().float() for w in weights])
    k = _n_pruned(flat.numel(), sparsity)
    keep = torch.ones_like(flat, dtype=torch.bool)
    if k > 0:
        keep[torch.topk(flat, k, largest=False, sorted=False).indices] = False
    masks, start = [], 0
    for w in weights:
        masks.append(keep[start : start + w.numel()].view_as(w))
        start += w.numel()
    return masks


def nm_mask(weight_out_in: Tensor, n: int, m: int) -> Tensor:
    """N:M keep-mask: in every group of M consecutive input weights of a row, keep the N largest."""
    out_f, in_f = weight_out_in.shape
    if in_f % m:
        raise ValueError(f"input width {in_f} is not divisible by M={m}")
    groups = weight_out_in.detach().abs().reshape(out_f, in_f // m, m)
    top = torch.topk(groups, n, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return mask.reshape(out_f, in_f)


def sparsity_of(tensors: list[Tensor]) -> float:
    """Fraction of exact zeros over all entries."""
    total = sum(t.numel() for t in tensors)
    zeros = sum(int((t == 0).sum()) for t in tensors)
    return zeros / total if total else 0.0
