"""Attention heads are physically removed, the config follows, and the model reloads."""

from __future__ import annotations

import pytest
import torch

from slimline.tasks import _structural as st
from slimline.tasks.families import detect, get_path, layers_of
from slimline.tasks.load import HEADS_KEY, auto_class, load_pretrained, load_tokenizer
from slimline.tasks.pruning.heads import HeadsConfig, prune_heads
from slimline.tasks.stages.prune import apply

ALL = ["bert", "distilbert", "gpt2", "llama", "qwen2"]


def _o_widths(model: torch.nn.Module) -> list[int]:
    fam = detect(model)
    return [st.out_major(get_path(layer, fam.o)).shape[1] for layer in layers_of(model, fam)]


@pytest.mark.parametrize("family", ALL)
def test_heads_removed_from_shapes_and_reload(
    tiny_model, tmp_path, texts, family: str, task_of, outputs
) -> None:
    src = tiny_model(family, task_of(family))
    rec = apply(HeadsConfig(amount=0.5), src, tmp_path / "pruned", task=task_of(family))
    pruned = load_pretrained(str(tmp_path / "pruned"), task_of(family))
    fam = detect(pruned)
    n_heads = 4
    head_dim = rec["head_dim"]
    layer0 = layers_of(pruned, fam)[0]
    assert rec["heads_before"] == [n_heads, n_heads]
    assert rec["heads_after"] == [2, 2]
    assert _o_widths(pruned) == [2 * head_dim, 2 * head_dim]
    q = st.out_major(get_path(layer0, fam.q))
    if fam.fused_qkv:
        assert q.shape[0] == 3 * 2 * head_dim
    else:
        assert q.shape[0] == 2 * head_dim
        # Under GQA (2 KV heads for 4 query heads) half the heads is one whole KV group.
        kv_heads = 1 if fam.kv_heads_attr else 2
        assert st.out_major(get_path(layer0, fam.k)).shape[0] == kv_heads * head_dim
        assert st.out_major(get_path(layer0, fam.v)).shape[0] == kv_heads * head_dim
    assert rec["params"] < rec["params_before"]
    # The reloaded model computes what the in-memory pruned model computed.
    original = load_pretrained(str(src), task_of(family))
    prune_heads(original, HeadsConfig(amount=0.5))
    tok = load_tokenizer(str(src))
    torch.testing.assert_close(outputs(pruned, tok, texts), outputs(original, tok, texts))


def test_llama_heads_reload_with_plain_from_pretrained(tiny_model, tmp_path) -> None:
    apply(HeadsConfig(amount=0.5), tiny_model("llama"), tmp_path / "p", task="causal-lm")
    model = auto_class("causal-lm").from_pretrained(tmp_path / "p")
    assert model.config.num_attention_heads == 2 and model.config.num_key_value_heads == 1
    assert model.model.layers[0].self_attn.q_proj.weight.shape == (2 * 8, 32)


def test_bert_heads_recorded_for_reload(tiny_model, tmp_path) -> None:
    apply(HeadsConfig(amount=0.25), tiny_model("bert"), tmp_path / "p", task="feature-extraction")
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tmp_path / "p")
    assert getattr(cfg, HEADS_KEY) == [3, 3]


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_head_removal_equals_masking_those_heads(tiny_model, texts, family: str, task_of, outputs) -> None:
    """Removing a head must compute exactly what the full model computes with that head's output zeroed."""
    task = task_of(family)
    tok = load_tokenizer(str(tiny_model(family)))
    pruned = load_pretrained(str(tiny_model(family)), task)
    rec = prune_heads(pruned, HeadsConfig(amount=0.5))
    masked = load_pretrained(str(tiny_model(family)), task)
    fam = detect(masked)
    hd = rec["head_dim"]
    with torch.no_grad():
        for layer, drop in zip(layers_of(masked, fam), rec["groups_removed"], strict=True):
            o = get_path(layer, fam.o)
            cols = st.head_channels(drop, hd)
            if st.is_conv1d(o):
                o.weight[cols, :] = 0
            else:
                o.weight[:, cols] = 0
    torch.testing.assert_close(outputs(pruned, tok, texts), outputs(masked, tok, texts), atol=1e-5, rtol=1e-4)


def test_layer_keeps_at_least_one_head(tiny_model) -> None:
    model = load_pretrained(str(tiny_model("bert")), "feature-extraction")
    rec = prune_heads(model, HeadsConfig(amount=0.99))
    assert rec["heads_after"] == [1, 1]
