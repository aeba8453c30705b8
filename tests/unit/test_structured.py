"""Heads and FFN channels are physically removed, the config follows, and the model reloads."""

from __future__ import annotations

import pytest
import torch

from tasks import _structural as st
from tasks.families import detect, get_path, layers_of
from tasks.load import HEADS_KEY, auto_class, load_pretrained, load_tokenizer
from tasks.prune import FFNConfig, HeadsConfig, apply, calibration_batches, prune_ffn, prune_heads

ALL = ["bert", "distilbert", "gpt2", "llama", "qwen2"]


def _task(family: str) -> str:
    return {"bert": "feature-extraction", "distilbert": "text-classification"}.get(family, "causal-lm")


def _out(model: torch.nn.Module, tok, texts: list[str]) -> torch.Tensor:
    enc = tok(texts[:3], return_tensors="pt", padding=True)
    if "token_type_ids" not in tok.model_input_names:
        enc.pop("token_type_ids", None)
    with torch.no_grad():
        return model(**enc)[0]


def _o_widths(model: torch.nn.Module) -> list[int]:
    fam = detect(model)
    return [st.out_major(get_path(layer, fam.o)).shape[1] for layer in layers_of(model, fam)]


@pytest.mark.parametrize("family", ALL)
def test_heads_removed_from_shapes_and_reload(tiny_model, tmp_path, texts, family: str) -> None:
    src = tiny_model(family, _task(family))
    rec = apply(HeadsConfig(amount=0.5), src, tmp_path / "pruned", task=_task(family))
    pruned = load_pretrained(str(tmp_path / "pruned"), _task(family))
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
    original = load_pretrained(str(src), _task(family))
    prune_heads(original, HeadsConfig(amount=0.5))
    tok = load_tokenizer(str(src))
    torch.testing.assert_close(_out(pruned, tok, texts), _out(original, tok, texts))


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
def test_head_removal_equals_masking_those_heads(tiny_model, texts, family: str) -> None:
    """Removing a head must compute exactly what the full model computes with that head's output zeroed."""
    task = _task(family)
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
    torch.testing.assert_close(_out(pruned, tok, texts), _out(masked, tok, texts), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ALL)
def test_ffn_channels_removed_and_plain_reload(tiny_model, tmp_path, family: str) -> None:
    rec = apply(FFNConfig(amount=0.25), tiny_model(family, _task(family)), tmp_path / "p", task=_task(family))
    # GPT-2's tiny config leaves n_inner unset: 4 x hidden = 128 channels; the others have 64.
    before = 128 if family == "gpt2" else 64
    assert rec["ffn_before"] == before and rec["ffn_after"] == before - before // 4
    model = auto_class(_task(family)).from_pretrained(tmp_path / "p")  # no slimline code needed
    fam = detect(model)
    for layer in layers_of(model, fam):
        assert st.out_major(get_path(layer, fam.ffn_out)).shape[1] == rec["ffn_after"]
        for p in fam.ffn_in:
            assert st.out_major(get_path(layer, p)).shape[0] == rec["ffn_after"]


def test_ffn_removal_equals_masking_channels(tiny_model, texts) -> None:
    tok = load_tokenizer(str(tiny_model("bert")))
    pruned = load_pretrained(str(tiny_model("bert")), "feature-extraction")
    rec = prune_ffn(pruned, FFNConfig(amount=0.5))
    masked = load_pretrained(str(tiny_model("bert")), "feature-extraction")
    fam = detect(masked)
    with torch.no_grad():
        for layer, drop in zip(layers_of(masked, fam), rec["channels_removed"], strict=True):
            get_path(layer, fam.ffn_out).weight[:, drop] = 0
    torch.testing.assert_close(_out(pruned, tok, texts), _out(masked, tok, texts), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["heads", "ffn"])
def test_activation_importance(tiny_model, tmp_path, texts, method: str) -> None:
    cfg = (
        HeadsConfig(amount=0.5, importance="activation")
        if method == "heads"
        else FFNConfig(amount=0.5, importance="activation")
    )
    rec = apply(cfg, tiny_model("bert"), tmp_path / "p", task="feature-extraction", calibration=texts[:16])
    assert rec["params"] < rec["params_before"]
    with pytest.raises(Exception, match="calibration"):
        prune_heads(
            load_pretrained(str(tiny_model("bert")), "feature-extraction"),
            HeadsConfig(amount=0.5, importance="activation"),
        )


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

    batches = calibration_batches(tok, texts[:16], 32)
    by_act = prune_ffn(rigged(), FFNConfig(amount=0.25, importance="activation"), batches)
    by_weight = prune_ffn(rigged(), FFNConfig(amount=0.25, importance="weight"))
    assert by_act["channels_removed"][0] == dead
    assert not set(dead) & set(by_weight["channels_removed"][0])


def test_layer_keeps_at_least_one_head(tiny_model) -> None:
    model = load_pretrained(str(tiny_model("bert")), "feature-extraction")
    rec = prune_heads(model, HeadsConfig(amount=0.99))
    assert rec["heads_after"] == [1, 1]
