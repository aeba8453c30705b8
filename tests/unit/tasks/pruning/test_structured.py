"""Heads and FFN channels together, and activation-based importance for either cut."""

from __future__ import annotations

import pytest

from slimline.tasks.base import TaskError
from slimline.tasks.load import load_pretrained
from slimline.tasks.pruning.ffn import FFNConfig
from slimline.tasks.pruning.heads import HeadsConfig, prune_heads
from slimline.tasks.pruning.structured import StructuredConfig
from slimline.tasks.stages.prune import apply


@pytest.mark.parametrize("method", ["heads", "ffn"])
def test_activation_importance(tiny_model, tmp_path, texts, method: str) -> None:
    cfg = (
        HeadsConfig(amount=0.5, importance="activation")
        if method == "heads"
        else FFNConfig(amount=0.5, importance="activation")
    )
    rec = apply(cfg, tiny_model("bert"), tmp_path / "p", task="feature-extraction", calibration=texts[:16])
    assert rec["params"] < rec["params_before"]
    with pytest.raises(TaskError, match="calibration"):
        prune_heads(
            load_pretrained(str(tiny_model("bert")), "feature-extraction"),
            HeadsConfig(amount=0.5, importance="activation"),
        )


def test_structured_cuts_heads_and_ffn_in_one_model(tiny_model, tmp_path) -> None:
    cfg = StructuredConfig(heads=0.5, ffn=0.25)
    rec = apply(cfg, tiny_model("llama"), tmp_path / "p", task="causal-lm")
    assert rec["heads_after"] == [2, 2] and rec["ffn_after"] == 48
    model = load_pretrained(str(tmp_path / "p"), "causal-lm")
    mlp, attn = model.model.layers[0].mlp, model.model.layers[0].self_attn
    assert mlp.up_proj.weight.shape == (48, 32) and mlp.down_proj.weight.shape == (32, 48)
    assert attn.q_proj.weight.shape == (2 * 8, 32) and attn.k_proj.weight.shape == (8, 32)
    assert cfg.changes_shapes and not cfg.needs_calibration()
    assert StructuredConfig(heads=0.5, ffn=0.5, importance="activation").needs_calibration()
