"""Distilling an encoder pruned in depth: each kept layer learns from the teacher layer it came from."""

from __future__ import annotations

import pytest
import torch

from slimline.tasks import _kd
from slimline.tasks.distillation.kd import DistillConfig
from slimline.tasks.load import load_pretrained
from slimline.tasks.pruning.layers import LayersConfig
from slimline.tasks.stages.distill import apply
from slimline.tasks.stages.prune import apply as prune


def test_hidden_loss_pairs_kept_layers_with_their_teacher_layers() -> None:
    torch.manual_seed(0)
    mask = torch.ones(2, 4, dtype=torch.long)
    teacher = tuple(torch.randn(2, 4, 8) for _ in range(5))  # embeddings + 4 layers
    # A student that kept teacher layers 0 and 2 and reproduces them exactly, then the last output.
    student = (teacher[0], teacher[1], teacher[4])
    parts = _kd.hidden_loss(student, teacher, mask, kept=[0, 2])
    assert float(parts["mse"]) == pytest.approx(0.0, abs=1e-6)
    assert float(_kd.hidden_loss((teacher[0], teacher[3], teacher[4]), teacher, mask, [0, 2])["mse"]) > 1e-3
    with pytest.raises(ValueError, match="hidden states"):
        _kd.hidden_loss(student, teacher, mask)


def test_a_layer_pruned_encoder_distils(tiny_model, tmp_path, texts) -> None:
    src = tiny_model("bert", init_range=0.2)
    prune(LayersConfig(drop=(0,)), src, tmp_path / "pruned", task="feature-extraction")
    cfg = DistillConfig(steps=12, lr=1e-3, batch_size=4, seed=0)
    rec = apply(cfg, tmp_path / "pruned", src, tmp_path / "kd", task="feature-extraction", texts=texts[48:])
    assert rec["loss_end"] < rec["loss_start"]
    student = load_pretrained(str(tmp_path / "kd"), "feature-extraction")
    assert student.config.num_hidden_layers == 1 and student.config.slimline_layers_kept == [1]
