"""Depth pruning: whole layers leave the weights and the config, the model reloads, decoders generate."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from slimline.tasks.base import TaskError
from slimline.tasks.families import detect, layers_of
from slimline.tasks.inputs import batches
from slimline.tasks.load import load_pretrained, load_tokenizer
from slimline.tasks.pruning.layers import LAYER_COUNT, LayersConfig
from slimline.tasks.pruning.layers import apply as drop_layers
from slimline.tasks.stages.prune import apply

ALL = ["bert", "distilbert", "gpt2", "llama", "qwen2"]


@pytest.mark.parametrize("family", ALL)
def test_first_layer_leaves_weights_and_config_and_the_model_reloads(
    tiny_model, tmp_path, family: str, task_of, texts
) -> None:
    task = task_of(family)
    src = tiny_model(family, task)
    original = load_pretrained(str(src), task)
    rec = apply(LayersConfig(drop=[0]), src, tmp_path / "p", task=task)
    assert (rec["layers_before"], rec["layers_after"], rec["layers_removed"]) == (2, 1, [0])
    model = load_pretrained(str(tmp_path / "p"), task)
    fam = detect(model)
    assert getattr(model.config, LAYER_COUNT[fam.name]) == 1 and len(layers_of(model, fam)) == 1
    keys = load_file(str(tmp_path / "p" / "model.safetensors"))
    prefix = fam.layers.split(".")[-1]
    assert not any(f"{prefix}.1." in k for k in keys)  # renumbered: no layer index 1 remains
    kept, was = layers_of(model, fam)[0].state_dict(), layers_of(original, fam)[1].state_dict()
    for name, value in kept.items():  # the kept layer is the original layer 1, unchanged
        torch.testing.assert_close(value, was[name])
    if task == "causal-lm":  # the KV cache is indexed by layer_idx: renumbering must hold
        ids = load_tokenizer(str(tmp_path / "p"))(texts[:1], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(input_ids=ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        assert out.shape[1] == ids.shape[1] + 5


def test_activation_importance_drops_the_layer_that_changes_nothing(tiny_model, texts) -> None:
    """Layer 1 with zeroed output projections adds nothing to the residual stream: influence ~0."""
    src = str(tiny_model("llama", init_range=0.2))
    model = load_pretrained(src, "causal-lm")
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    calib = list(batches(load_tokenizer(src), texts[:16], 8, 32, kind="pt"))
    rec = drop_layers(LayersConfig(amount=0.5, importance="activation"), model, calib)
    assert rec["layers_removed"] == [1]
    assert rec["layer_scores"][1] == pytest.approx(0.0, abs=1e-5)
    assert rec["layer_scores"][0] > 1e-3


def test_config_errors() -> None:
    with pytest.raises(ValidationError, match="exactly one of amount"):
        LayersConfig()
    with pytest.raises(ValidationError, match="exactly one of amount"):
        LayersConfig(amount=0.5, drop=[1])
    assert LayersConfig(amount=0.5).needs_calibration() is False  # weight importance reads no text
    assert LayersConfig(amount=0.5, importance="activation").needs_calibration() is True


def test_out_of_range_index_is_a_task_error(tiny_model) -> None:
    model = load_pretrained(str(tiny_model("bert")), "feature-extraction")
    with pytest.raises(TaskError, match=r"\[5\] out of range"):
        drop_layers(LayersConfig(drop=[5]), model)
