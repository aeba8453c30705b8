"""Stage state that survives moves, copies and damage (issue 25): records hold paths relative to
the artifact root, and every cached output is checked against the inventory its record wrote."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import yaml

from slimline.pipelines.run.local import LocalExecutor
from slimline.pipelines.run.run import run
from slimline.pipelines.spec.spec import Spec

VARIANTS = {"pruning": ["none"], "quantization": ["none", {"method": "dynamic-int8"}]}


def _records(stages: Path) -> dict[str, int]:
    return {p.stem: p.stat().st_mtime_ns for p in stages.glob("*.json")}


def _spec(tiny_spec, model: Path, root: Path) -> Spec:
    return Spec.model_validate(tiny_spec(model, "feature-extraction", root, variants=VARIANTS))


def _stage(stages: Path, kind: str) -> str:
    return next(p.stem for p in stages.glob(f"{kind}-*.json"))


def test_moved_copied_and_damaged_roots(tiny_model, tiny_spec, tmp_path, caplog, cli) -> None:
    model = tiny_model("bert")
    first = run(_spec(tiny_spec, model, tmp_path / "a"), LocalExecutor())
    stages = tmp_path / "a" / "stages"
    records = _records(stages)
    text = "".join(p.read_text() for p in stages.glob("*.json"))
    assert str(tmp_path / "a") not in text and "$stages/" in text  # no absolute path is kept

    # `plan` shows the ids the run used (issue 26: it skipped the model digest) and what is cached.
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        yaml.safe_dump(tiny_spec(model, "feature-extraction", tmp_path / "a", variants=VARIANTS))
    )
    planned = cli("plan", str(spec_file))
    ran = {sid for v in first["variants"] for sid in v["stages"]}
    assert planned.returncode == 0 and ran and all(sid in planned.stdout for sid in ran)
    assert "0 to run" in planned.stdout and "cached" in planned.stdout

    # Moved: every stage is reused where it now lies (it failed with FileNotFoundError before).
    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = run(_spec(tiny_spec, model, tmp_path / "b"), LocalExecutor())
    stages = tmp_path / "b" / "stages"
    assert _records(stages) == records and moved["selected"] == first["selected"]
    assert all(str(tmp_path / "b") in v["onnx"] for v in moved["variants"] if v.get("onnx"))

    # Copied, the original then removed: the copy reads only its own files.
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    shutil.rmtree(tmp_path / "b")
    copy = run(_spec(tiny_spec, model, tmp_path / "c"), LocalExecutor())
    stages = tmp_path / "c" / "stages"
    assert copy["status"] == "succeeded" and set(_records(stages)) == set(records)
    assert all(str(tmp_path / "c") in v["onnx"] for v in copy["variants"] if v.get("onnx"))
    records = _records(stages)

    # Damage in place: a truncated graph, a same-size edit of meta.json, a removed folder and a
    # record of the wrong shape are each recomputed with a warning, and the run succeeds.
    quant, export, load = _stage(stages, "quantize"), _stage(stages, "export"), _stage(stages, "load")
    onnx = next((stages / quant).glob("*.onnx"))
    onnx.write_bytes(onnx.read_bytes()[:100])
    meta = stages / export / "meta.json"
    meta.write_text(meta.read_text().replace('"', "'", 1))
    shutil.rmtree(stages / load)
    evaluate = _stage(stages, "evaluate")
    (stages / f"{evaluate}.json").write_text(json.dumps([]))
    with caplog.at_level(logging.WARNING):
        again = run(_spec(tiny_spec, model, tmp_path / "c"), LocalExecutor())
    assert again["status"] == "succeeded"
    after = _records(stages)
    for sid in (quant, export, load, evaluate):
        assert after[sid] != records[sid], sid  # computed again
    assert "computing it again" in caplog.text and "is missing" in caplog.text
    assert "changed after the stage finished" in caplog.text and "has 100 bytes" in caplog.text
    assert (stages / load).is_dir() and not list(stages.glob(".*stale*"))
