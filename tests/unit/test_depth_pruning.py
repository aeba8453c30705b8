"""Depth pruning: layers leave weights and config, kept layers are renumbered, models reload and generate."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from slimline.tasks.base import TaskError
from slimline.tasks.families import Family, detect, layers_of
from slimline.tasks.inputs import batches
from slimline.tasks.load import HEADS_KEY, auto_class, load_pretrained, load_tokenizer
from slimline.tasks.pruning.heads import HeadsConfig
from slimline.tasks.pruning.layers import LAYER_COUNT, LAYERS_KEY, LayersConfig, prune_layers
from slimline.tasks.pruning.structured import StructuredConfig
from slimline.tasks.stages.prune import apply

TASK = {
    "bert": "feature-extraction",
    "distilbert": "text-classification",
    "gpt2": "causal-lm",
    "llama": "causal-lm",
    "qwen2": "causal-lm",
}
DEPTH = 4


@pytest.fixture(scope="session")
def deep_model(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """deep_model(family, init_range=None) -> the tiny model of that family rebuilt with 4 layers.

    Four layers, so that a dropped middle layer moves the ones after it (renumbering matters).
    """
    cache: dict[tuple[str, float | None], Path] = {}

    def make(family: str, init_range: float | None = None) -> Path:
        from transformers import AutoConfig, AutoTokenizer

        if (family, init_range) not in cache:
            src = tiny_model(family, TASK[family])
            config = AutoConfig.from_pretrained(src)
            config.num_hidden_layers = DEPTH  # an alias of n_layers / n_layer where those are the name
            if getattr(config, "layer_types", None):  # Qwen2 lists one attention kind per layer
                config.layer_types = [config.layer_types[0]] * DEPTH
            if init_range is not None:
                config.initializer_range = init_range
            torch.manual_seed(0)
            out = tmp_path_factory.mktemp(f"deep-{family}")
            auto_class(TASK[family]).from_config(config, attn_implementation="eager").save_pretrained(out)
            AutoTokenizer.from_pretrained(str(src)).save_pretrained(out)
            cache[(family, init_range)] = out
        return cache[(family, init_range)]

    return make


def _layer_indices(folder: Path, fam: Family) -> set[int]:
    """The layer indices that appear in the saved weights."""
    pattern = re.compile(rf"(?:^|\.){re.escape(fam.layers)}\.(\d+)\.")
    keys = load_file(str(folder / "model.safetensors"))
    return {int(m.group(1)) for k in keys if (m := pattern.search(k))}


def _encode(folder: Path, texts: list[str]) -> dict[str, torch.Tensor]:
    tok = load_tokenizer(str(folder))
    enc = tok(texts[:3], return_tensors="pt", padding=True)
    if "token_type_ids" not in tok.model_input_names:
        enc.pop("token_type_ids", None)
    return dict(enc)


def _generate(model: torch.nn.Module, ids: torch.Tensor, use_cache: bool) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(
            input_ids=ids, max_new_tokens=5, min_new_tokens=5, do_sample=False, use_cache=use_cache
        )


@pytest.mark.parametrize("family", list(TASK))
def test_dropped_layers_leave_weights_and_config_and_the_model_reloads(
    deep_model, tmp_path, texts, family: str
) -> None:
    task, src = TASK[family], deep_model(family)
    rec = apply(LayersConfig(drop=(0, 2)), src, tmp_path / "p", task=task)
    assert (rec["layers_before"], rec["layers_after"], rec["layers_removed"]) == (4, 2, [0, 2])
    assert rec["params"] < rec["params_before"]
    json.dumps(rec)  # a stage record crosses process boundaries
    original = load_pretrained(str(src), task)
    model = load_pretrained(str(tmp_path / "p"), task)
    fam = detect(model)
    saved = json.loads((tmp_path / "p" / "config.json").read_text())
    assert saved[LAYER_COUNT[fam.name]] == 2 and saved[LAYERS_KEY] == [1, 3]
    assert model.config.num_hidden_layers == 2 and len(layers_of(model, fam)) == 2
    if "layer_types" in saved:
        assert len(saved["layer_types"]) == 2
    assert _layer_indices(tmp_path / "p", fam) == {0, 1}
    # The kept layers are the original layers 1 and 3, unchanged, at positions 0 and 1.
    for new, old in enumerate((1, 3)):
        was = layers_of(original, fam)[old].state_dict()
        for name, value in layers_of(model, fam)[new].state_dict().items():
            torch.testing.assert_close(value, was[name])
    # What was pruned in memory is what reloads.
    pruned = load_pretrained(str(src), task)
    prune_layers(pruned, LayersConfig(drop=(0, 2)))
    enc = _encode(src, texts)
    with torch.no_grad():
        torch.testing.assert_close(model(**enc)[0], pruned(**enc)[0])
    if task == "causal-lm":
        # The KV cache is indexed by each attention's layer_idx: cached decoding must equal decoding
        # without a cache, in memory (renumbered in place) and reloaded (built afresh).
        idx = [
            {m.layer_idx for m in layer.modules() if hasattr(m, "layer_idx")}
            for layer in layers_of(pruned, fam)
        ]
        assert idx == [{0}, {1}]
        ids = enc["input_ids"][:1]
        for m in (pruned, model):
            out = _generate(m, ids, use_cache=True)
            assert out.shape[1] == ids.shape[1] + 5
            assert torch.equal(out, _generate(m, ids, use_cache=False))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("importance", ["activation", "weight"])
def test_the_layer_that_changes_nothing_is_dropped(deep_model, texts, family: str, importance: str) -> None:
    """A pre-norm layer with zeroed output projections adds nothing to the residual stream."""
    src = str(deep_model(family, init_range=0.2))
    model = load_pretrained(src, TASK[family])
    fam = detect(model)
    with torch.no_grad():
        for path in (fam.o, fam.ffn_out):
            mod = layers_of(model, fam)[2].get_submodule(path)
            mod.weight.zero_()
            if getattr(mod, "bias", None) is not None:
                mod.bias.zero_()
    calib = list(batches(load_tokenizer(src), texts[:16], 8, 32, kind="pt"))
    rec = prune_layers(model, LayersConfig(amount=0.25, importance=importance), calib)
    assert rec["layers_removed"] == [2] and rec["layers_after"] == 3
    scores = rec["layer_scores"]
    assert scores[2] == pytest.approx(0.0, abs=1e-5)
    assert min(s for i, s in enumerate(scores) if i != 2) > 1e-3


def test_amount_rounds_and_keeps_a_layer(tiny_model) -> None:
    model = load_pretrained(str(tiny_model("bert")), "feature-extraction")
    rec = prune_layers(model, LayersConfig(amount=0.9))  # round(1.8) = 2 of 2, but one stays
    assert rec["layers_after"] == 1 and len(rec["layer_scores"]) == 2
    assert model.config.num_hidden_layers == 1


def test_config_errors(tiny_model) -> None:
    for bad in ({}, {"amount": 0.5, "drop": [1]}):
        with pytest.raises(ValidationError, match="exactly one of amount"):
            LayersConfig.model_validate(bad)
    with pytest.raises(ValidationError, match="at least one layer"):
        LayersConfig(drop=())
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        LayersConfig.model_validate({"drop": [-1]})
    assert LayersConfig.model_validate({"drop": [1, 3]}).drop == (1, 3)  # JSON and YAML give lists
    assert "drop" in LayersConfig.list_fields  # a list is one value, never a grid axis
    assert not LayersConfig(amount=0.5).needs_calibration()
    assert LayersConfig(amount=0.5, importance="activation").needs_calibration()
    assert not LayersConfig(drop=(0,), importance="activation").needs_calibration()  # nothing to score
    assert LayersConfig(amount=0.5).changes_shapes
    model = load_pretrained(str(tiny_model("bert")), "feature-extraction")
    with pytest.raises(TaskError, match=r"\[2, 5\] out of range"):
        prune_layers(model, LayersConfig(drop=(5, 1, 2)))
    with pytest.raises(TaskError, match="keep at least one"):
        prune_layers(model, LayersConfig(drop=(0, 1)))
    with pytest.raises(TaskError, match="calibration"):
        prune_layers(model, LayersConfig(amount=0.5, importance="activation"))
    assert len(layers_of(model, detect(model))) == 2  # a refused cut leaves the model whole


def test_structured_cuts_layers_then_heads(deep_model, tmp_path, texts) -> None:
    src = deep_model("bert")
    cfg = StructuredConfig(layers=0.5, heads=0.5)
    assert cfg.label() == "structured(layers=0.5, heads=0.5)" and cfg.changes_shapes
    rec = apply(cfg, src, tmp_path / "p", task="feature-extraction")
    assert rec["layers_after"] == 2 and rec["heads_after"] == [2, 2] and "ffn_after" not in rec
    saved = json.loads((tmp_path / "p" / "config.json").read_text())
    assert saved[HEADS_KEY] == [2, 2] and saved["num_hidden_layers"] == 2
    model = load_pretrained(str(tmp_path / "p"), "feature-extraction")
    with torch.no_grad():
        assert model(**_encode(src, texts))[0].isfinite().all()
    # Existing heads+ffn configs keep their label and JSON (hence their digest and stage ids).
    old = StructuredConfig(heads=0.5, ffn=0.25)
    assert old.label() == "structured(heads=0.5, ffn=0.25)" and "layers" not in old.to_json()
    with pytest.raises(ValidationError, match="at least one of layers, heads and ffn"):
        StructuredConfig()


def test_heads_recorded_per_layer_follow_the_layers(deep_model, tmp_path) -> None:
    """A GPT-2 whose head counts live in the config (see tasks.load) loses a layer in a later stage."""
    apply(HeadsConfig(amount=0.25), deep_model("gpt2"), tmp_path / "h", task="causal-lm")
    rec = apply(LayersConfig(drop=(1,)), tmp_path / "h", tmp_path / "p", task="causal-lm")
    assert rec["layers_after"] == 3
    saved = json.loads((tmp_path / "p" / "config.json").read_text())
    assert saved[HEADS_KEY] == [3, 3, 3] and saved["n_layer"] == 3
    model = load_pretrained(str(tmp_path / "p"), "causal-lm")
    ids = torch.tensor([[101, 2023, 2003, 1037]])
    assert torch.equal(_generate(model, ids, use_cache=True), _generate(model, ids, use_cache=False))
    # A second depth cut: the kept layers are still named by their index in the original model.
    apply(LayersConfig(drop=(0,)), tmp_path / "p", tmp_path / "q", task="causal-lm")
    again = json.loads((tmp_path / "q" / "config.json").read_text())
    assert saved[LAYERS_KEY] == [0, 2, 3] and again[LAYERS_KEY] == [2, 3] and again[HEADS_KEY] == [3, 3]
