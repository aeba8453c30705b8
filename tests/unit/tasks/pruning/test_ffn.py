"""FFN channels are physically removed, the config follows, and the model reloads with plain transformers."""

from __future__ import annotations

import pytest
import torch

from slimline.tasks import _structural as st
from slimline.tasks.families import detect, get_path, layers_of
from slimline.tasks.inputs import batches
from slimline.tasks.load import auto_class, load_pretrained, load_tokenizer
from slimline.tasks.pruning.ffn import FFNConfig, prune_ffn
from slimline.tasks.stages.prune import apply

ALL = ["bert", "distilbert", "gpt2", "llama", "qwen2"]


@pytest.mark.parametrize("family", ALL)
def test_ffn_channels_removed_and_plain_reload(tiny_model, tmp_path, family: str, task_of) -> None:
    rec = apply(
        FFNConfig(amount=0.25), tiny_model(family, task_of(family)), tmp_path / "p", task=task_of(family)
    )
    # GPT-2's tiny config leaves n_inner unset: 4 x hidden = 128 channels; the others have 64.
    before = 128 if family == "gpt2" else 64
    assert rec["ffn_before"] == before and rec["ffn_after"] == before - before // 4
    model = auto_class(task_of(family)).from_pretrained(tmp_path / "p")  # no slimline code needed
    fam = detect(model)
    for layer in layers_of(model, fam):
        assert st.out_major(get_path(layer, fam.ffn_out)).shape[1] == rec["ffn_after"]
        for p in fam.ffn_in:
            assert st.out_major(get_path(layer, p)).shape[0] == rec["ffn_after"]


def test_ffn_removal_equals_masking_channels(tiny_model, texts, outputs) -> None:
    tok = load_tokenizer(str(tiny_model("bert")))
    pruned = load_pretrained(str(tiny_model("bert")), "feature-extraction")
    rec = prune_ffn(pruned, FFNConfig(amount=0.5))
    masked = load_pretrained(str(tiny_model("bert")), "feature-extraction")
    fam = detect(masked)
    with torch.no_grad():
        for layer, drop in zip(layers_of(masked, fam), rec["channels_removed"], strict=True):
            get_path(layer, fam.ffn_out).weight[:, drop] = 0
    torch.testing.assert_close(outputs(pruned, tok, texts), outputs(masked, tok, texts), atol=1e-5, rtol=1e-4)


def test_activation_importance_sees_dead_channels(tiny_model, texts) -> None:
    """Channels with big weights but a large negative bias never fire: only activation importance knows."""
    tok = load_tokenizer(str(tiny_model("bert")))
    dead = list(range(16))

    def rigged() -> torch.nn.Module:
        model = load_pretrained(str(tiny_model("bert")), "feature-extraction")
        with torch.no_grad():
            for layer in model.encoder.layer:
                layer.intermediate.dense.weight[dead] *= 10
                layer.intermediate.dense.bias[dead] = -1e4
        return model

    calib = list(batches(tok, texts[:16], 8, 32, kind="pt"))
    by_act = prune_ffn(rigged(), FFNConfig(amount=0.25, importance="activation"), calib)
    by_weight = prune_ffn(rigged(), FFNConfig(amount=0.25, importance="weight"))
    assert by_act["channels_removed"][0] == dead
    assert not set(dead) & set(by_weight["channels_removed"][0])
