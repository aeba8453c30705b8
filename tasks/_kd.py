"""Pure tensor functions of knowledge distillation: the losses, masks and the LR schedule.

Kept apart from `tasks.distillation.kd` (which batches text and trains) and `tasks.stages.distill`
(which loads and saves models), so that the math can be read, and tested, on its own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of `x` (B, T) over the real tokens of `mask` (B, T)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def mean_pool(h: Tensor, mask: Tensor) -> Tensor:
    """Mean of the hidden states (B, T, H) over real tokens: the pooling fidelity is judged on."""
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1e-9)


def relative_mse(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Squared error over real tokens, relative to the teacher's own energy there.

    Hidden states of different layers live at different scales; relative error gives every
    layer the same weight without hand-tuned coefficients.
    """
    err = (student - teacher).pow(2).sum(-1)
    energy = teacher.pow(2).sum(-1)
    return masked_mean(err, mask) / masked_mean(energy, mask).clamp_min(1e-12)


def hidden_loss(
    student: tuple[Tensor, ...], teacher: tuple[Tensor, ...], mask: Tensor, kept: list[int] | None = None
) -> dict[str, Tensor]:
    """Encoder distillation: relative MSE on every layer's output, cosine on the last layer.

    The cosine is taken per token and on the mean-pooled embedding: the latter is exactly what
    fidelity measures, the former keeps every token's direction right, not only their mean.
    Index 0 (the embeddings) is skipped: pruning heads or FFN channels leaves it untouched.
    A student pruned in depth keeps `kept` (the teacher's indices of its layers): each of its
    layers then matches the teacher layer it came from, and its last layer the teacher's last.
    """
    if kept is not None:
        teacher = (teacher[0], *(teacher[k + 1] for k in kept[:-1]), teacher[-1])
    if len(student) != len(teacher):
        raise ValueError(f"student has {len(student)} hidden states, teacher {len(teacher)}")
    mse = torch.stack([relative_mse(s, t, mask) for s, t in zip(student[1:], teacher[1:], strict=True)])
    s_last, t_last = student[-1], teacher[-1]
    cos_tok = masked_mean(1 - F.cosine_similarity(s_last, t_last, dim=-1), mask)
    cos_pool = (1 - F.cosine_similarity(mean_pool(s_last, mask), mean_pool(t_last, mask), dim=-1)).mean()
    return {"mse": mse.mean(), "cos_token": cos_tok, "cos_pooled": cos_pool}


def logit_kl(student: Tensor, teacher: Tensor, temperature: float, mask: Tensor | None = None) -> Tensor:
    """KL(teacher ‖ student) of temperature-softened logits, scaled by T² (Hinton et al.).

    Logits are (B, C) for classifiers, or (B, T, V) for causal LMs, where `mask` (B, T) keeps
    real tokens only.
    """
    t = temperature
    log_p_s = F.log_softmax(student.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher.float() / t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1) * t * t
    return masked_mean(kl, mask) if mask is not None else kl.mean()


def warmup_linear_decay(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up over `warmup` steps, then linear decay to zero at `total`."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def downsample(values: list[float], points: int = 50) -> list[list[float]]:
    """[[step, mean loss over the window ending there], ...] with at most `points` entries."""
    if not values:
        return []
    width = max(1, math.ceil(len(values) / points))
    out = []
    for start in range(0, len(values), width):
        window = values[start : start + width]
        out.append([start + len(window), sum(window) / len(window)])
    return out
