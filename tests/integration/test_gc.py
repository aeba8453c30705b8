"""`slimline gc` on a real sweep: what it keeps is reused by the rerun, what it removes is recomputed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from slimline.pipelines.ports import NullObserver
from slimline.pipelines.run import gc
from slimline.pipelines.run.local import LocalExecutor
from slimline.pipelines.run.run import run
from slimline.pipelines.spec.spec import load_spec

VARIANTS = {
    "pruning": ["none", {"method": "heads", "amount": 0.5}],
    "quantization": ["none", {"method": "dynamic-int8", "per_channel": True}],
}


def _records(stages: Path) -> dict[str, int]:
    return {p.stem: p.stat().st_mtime_ns for p in stages.glob("*.json")}


def test_gc_keeps_the_selection_and_frees_the_rest(tiny_model, tiny_spec, tmp_path, cli) -> None:
    data = tiny_spec(
        tiny_model("bert"),
        "feature-extraction",
        tmp_path / "artifacts",
        variants=VARIANTS,
        select={"constraints": {"fidelity": {"min": 0.5}}, "objectives": ["size_mb"], "top_k": 1},
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path)
    manifest = run(spec, LocalExecutor())
    rows = {v["id"]: v for v in manifest["variants"]}
    kept = {
        s for vid in (manifest["baseline"]["variant"], *manifest["selected"]) for s in rows[vid]["stages"]
    }
    stages = tmp_path / "artifacts" / "stages"
    before = _records(stages)
    assert kept < set(before)  # something is removable: the variants that were not selected

    full = gc.plan(tmp_path / "artifacts", "selected")
    partial = gc.plan(tmp_path / "artifacts", "selected", max_bytes=full.before - 1)
    assert len(partial.remove) == 1 and partial.remove[0] == full.remove[0]  # the oldest goes first

    dry = cli("gc", str(path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    listed = {line.strip() for line in dry.stdout.splitlines() if line.startswith("  ")}
    assert listed == set(before) - kept and _records(stages) == before  # a dry run removes nothing
    assert "would remove" in dry.stdout and "artifacts.keep: selected" in dry.stdout

    done = cli("gc", str(path))
    assert done.returncode == 0 and "removed" in done.stdout
    assert set(_records(stages)) == kept and not any((stages / sid).exists() for sid in listed)
    left = gc.plan(tmp_path / "artifacts", "selected")
    assert left.remove == [] and left.before == gc.plan(tmp_path / "artifacts", "all").before

    again = run(spec, LocalExecutor())
    after = _records(stages)
    assert all(after[sid] == before[sid] for sid in kept)  # kept stages were reused, not recomputed
    assert set(after) == set(before)  # the removed ones were computed again
    assert again["selected"] == manifest["selected"]

    # gc while a run reads its cached stages (issue 25: it removed them and the run died): the
    # run's lease keeps every stage it reads, gc says so, and the run succeeds.
    mid = _GcMidRun(tmp_path / "artifacts")
    third = run(spec, LocalExecutor(), observer=mid)
    assert mid.done is not None and mid.done.remove == [] and set(mid.done.leased) == set(listed)
    assert third["status"] == "succeeded" and third["selected"] == manifest["selected"]
    assert _records(stages) == after  # nothing removed, nothing recomputed
    assert not list((stages / ".leases").glob("*.json"))  # the run released its lease


class _GcMidRun(NullObserver):
    """Runs `gc` (keep: selected) once, as soon as the run has found its first stage."""

    def __init__(self, root: Path) -> None:
        self.root, self.done = root, None

    def finished(self, stage: Any, record: Any) -> None:
        if self.done is None:
            self.done = gc.apply(self.root, gc.plan(self.root, "selected"))


def test_sizes_read_as_users_write_them() -> None:
    assert gc.parse_size("5GB") == 5 * 10**9 and gc.parse_size("1.5 MiB") == 1_500_000
    assert gc.parse_size("1000") == 1000
    with pytest.raises(ValueError, match="expected a size"):
        gc.parse_size("lots")
