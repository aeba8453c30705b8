"""Pure helpers for structured pruning: channel index maths and slicing of weight matrices.

Linear stores weight as [out, in]; GPT-2's Conv1D stores it as [in, out]. Everything here goes
through `out_major` / `keep_out` / `keep_in` so callers never care which one they hold.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def is_conv1d(mod: nn.Module) -> bool:
    """True for transformers' GPT-2 style Conv1D (a Linear with a transposed weight)."""
    return type(mod).__name__ == "Conv1D"


def out_major(mod: nn.Module) -> Tensor:
    """The weight as an [out, in] matrix, whatever the module type."""
    w = mod.weight.detach()
    return w.t() if is_conv1d(mod) else w


def keep_out(mod: nn.Module, idx: Tensor) -> None:
    """Keep only output channels `idx` (rows of a Linear, columns of a Conv1D) and their bias."""
    with torch.no_grad():
        if is_conv1d(mod):
            mod.weight = nn.Parameter(mod.weight[:, idx].clone())
            mod.nf = len(idx)
        else:
            mod.weight = nn.Parameter(mod.weight[idx, :].clone())
            mod.out_features = len(idx)
        if getattr(mod, "bias", None) is not None:
            mod.bias = nn.Parameter(mod.bias[idx].clone())


def keep_in(mod: nn.Module, idx: Tensor) -> None:
    """Keep only input channels `idx`; the bias (indexed by output) is untouched."""
    with torch.no_grad():
        if is_conv1d(mod):
            mod.weight = nn.Parameter(mod.weight[idx, :].clone())
        else:
            mod.weight = nn.Parameter(mod.weight[:, idx].clone())
            mod.in_features = len(idx)


def head_channels(heads: list[int], head_dim: int) -> Tensor:
    """Channel indices covered by the given heads."""
    if not heads:
        return torch.empty(0, dtype=torch.long)
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])


def group_scores_by_weight(
    q: Tensor, k: Tensor, v: Tensor, o: Tensor, n_heads: int, n_kv: int, head_dim: int
) -> Tensor:
    """L2 importance of each KV group (a single head when n_kv == n_heads).

    q, k, v are [out, in]; o is [hidden, in] (its input channels are the heads' outputs).
    A group's score sums its query heads' q rows and o columns with its own k and v rows.
    """
    r = n_heads // n_kv
    qh = q.reshape(n_heads, head_dim, -1).pow(2).sum(dim=(1, 2))
    oh = o.reshape(o.shape[0], n_heads, head_dim).pow(2).sum(dim=(0, 2))
    kg = k.reshape(n_kv, head_dim, -1).pow(2).sum(dim=(1, 2))
    vg = v.reshape(n_kv, head_dim, -1).pow(2).sum(dim=(1, 2))
    return ((qh + oh).reshape(n_kv, r).sum(1) + kg + vg).sqrt()


def group_scores_by_activation(
    act_abs_mean: Tensor, o: Tensor, n_heads: int, n_kv: int, head_dim: int
) -> Tensor:
    """Importance of each KV group from calibration: mean |head output| times the o-projection norm."""
    per_channel = act_abs_mean * o.norm(dim=0)
    return per_channel.reshape(n_kv, (n_heads // n_kv) * head_dim).sum(1)


def channel_scores_by_weight(ins: list[Tensor], out: Tensor) -> Tensor:
    """FFN channel importance: norm of its input rows (up, gate) times norm of its output column."""
    in_norm = torch.stack([w.norm(dim=1) for w in ins]).sum(0)
    return in_norm * out.norm(dim=0)


def lowest(scores: Tensor, count: int) -> list[int]:
    """Indices of the `count` lowest scores, ascending by index (ties broken by index, so stable)."""
    if count <= 0:
        return []
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    return sorted(order[:count])
