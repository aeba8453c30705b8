"""Stage ids hash content: a model edited in place is a new input, a moved one is not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file

from slimline.pipelines.run.run import prepare
from slimline.pipelines.spec.spec import load_spec

VARIANTS = {"pruning": ["none", {"method": "heads", "amount": 0.5}], "quantization": ["none"]}


@pytest.fixture()
def model(tiny_model, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model("bert"), tmp_path / "model"))


def _ids(tiny_spec, tmp_path: Path, model: Path) -> dict[str, str]:
    """Stage kind -> id, for the baseline chain and the pruned chain."""
    spec = tiny_spec(model, "feature-extraction", tmp_path / "artifacts", variants=VARIANTS)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    plan, _ = prepare(load_spec(tmp_path / "spec.yaml"), tmp_path / "artifacts" / "stages")
    return {f"{s.kind}:{s.label}": s.id for s in plan.stages.values()}


def test_unchanged_model_gives_identical_ids(model, tiny_spec, tmp_path) -> None:
    assert _ids(tiny_spec, tmp_path, model) == _ids(tiny_spec, tmp_path, model)
    moved = Path(shutil.copytree(model, tmp_path / "elsewhere"))
    assert _ids(tiny_spec, tmp_path, moved) == _ids(tiny_spec, tmp_path, model)


def test_config_edited_in_place_changes_every_id_and_restoring_it_restores_them(
    model, tiny_spec, tmp_path
) -> None:
    before = _ids(tiny_spec, tmp_path, model)
    original = (model / "config.json").read_text()
    (model / "config.json").write_text(json.dumps({**json.loads(original), "layer_norm_eps": 1e-6}))
    edited = _ids(tiny_spec, tmp_path, model)
    assert not set(before.values()) & set(edited.values())  # load, prune, export, ...: all new
    (model / "config.json").write_text(original)
    assert _ids(tiny_spec, tmp_path, model) == before


def test_one_weight_edited_in_place_changes_the_ids(model, tiny_spec, tmp_path) -> None:
    before = _ids(tiny_spec, tmp_path, model)
    (weights,) = model.glob("*.safetensors")
    state = load_file(str(weights))
    name = next(k for k in state if k.endswith("query.weight"))
    state[name][0, 0] += 1.0
    save_file(state, str(weights), metadata={"format": "pt"})
    after = _ids(tiny_spec, tmp_path, model)
    kinds = {k.split(":")[0] for k in before if before[k] != after.get(k)}
    assert {"load", "prune", "export", "optimize", "evaluate"} <= kinds


def test_file_digests_are_cached_by_size_and_mtime(model, tiny_spec, tmp_path) -> None:
    before = _ids(tiny_spec, tmp_path, model)
    cache_file = tmp_path / "artifacts" / "digests.json"
    cache = json.loads(cache_file.read_text())
    config_key = str((model / "config.json").resolve())
    assert cache[config_key]["stamp"][0] == (model / "config.json").stat().st_size
    # A stale-looking entry with the file's own stamp is trusted: the file is not read again.
    cache[config_key]["sha256"] = "0" * 64
    cache_file.write_text(json.dumps(cache))
    assert _ids(tiny_spec, tmp_path, model)["load:load base model"] != before["load:load base model"]
