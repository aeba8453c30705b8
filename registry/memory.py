"""A registry that keeps everything in memory: `--registry none` and unit tests.

It implements the same port as the MLflow adapter, so the same policy (pipelines.publish)
decides what a run registers and whether an alias moves; nothing outlives the process.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimline.pipelines.ports import RegisteredVersion, TrackedRun
from slimline.pipelines.run.records import numeric
from slimline.pipelines.spec.spec import Spec


@dataclass
class _Model:
    versions: list[RegisteredVersion] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)


class InMemoryRegistry:
    """Registered models, versions and aliases in a dict; runs are remembered by run id."""

    def __init__(self) -> None:
        self.models: dict[str, _Model] = {}
        self.graphs: dict[tuple[str, str], Path] = {}  # (name, version) -> the variant's model.onnx
        self.runs: dict[str, dict[str, Any]] = {}  # run id -> its final manifest ({} until finished)

    def check(self) -> None:
        """Always reachable."""

    def describe(self) -> str:
        """A store that keeps nothing."""
        return "memory (nothing is kept)"

    def track(self, manifest: dict[str, Any], spec: Spec, log_models: Sequence[str] = ()) -> TrackedRun:
        """The run, with its variants as children (by their own ids); models are not kept."""
        self.runs.setdefault(manifest["run_id"], {})
        return TrackedRun(manifest["run_id"], {r["id"]: r["id"] for r in manifest["variants"]})

    def register(
        self, name: str, row: dict[str, Any], manifest: dict[str, Any], run: TrackedRun
    ) -> str | None:
        """The version holding this variant, created once; None when the variant has no model file."""
        if not row.get("onnx"):
            return None
        model = self.models.setdefault(name, _Model())
        for v in model.versions:
            if v.variant == row["id"]:
                return v.version
        version = RegisteredVersion(name, str(len(model.versions) + 1), row["id"], numeric(row["metrics"]))
        model.versions.append(version)
        self.graphs[name, model.versions[-1].version] = Path(row["onnx"])
        return model.versions[-1].version

    def alias_holder(self, name: str, alias: str) -> RegisteredVersion | None:
        """The version `alias` points at, or None."""
        model = self.models.get(name)
        if model is None or alias not in model.aliases:
            return None
        return next(v for v in model.versions if v.version == model.aliases[alias])

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point `alias` at `version` (which must exist)."""
        model = self.models[name]
        if not any(v.version == version for v in model.versions):
            raise KeyError(f"{name} has no version {version}")
        model.aliases[alias] = version

    def fetch(self, name: str, version: str, dest: Path) -> Path:
        """Copy the version's graph folder into `dest`."""
        src = self.graphs[name, version]
        shutil.copytree(src.parent, dest, dirs_exist_ok=True)
        return dest / src.name

    def aliases_of(self, name: str, version: str) -> list[str]:
        """The aliases that point at `version`."""
        return sorted(a for a, v in self.models[name].aliases.items() if v == version)

    def finish(self, run: TrackedRun, manifest: dict[str, Any], run_dir: Path) -> None:
        """Remember the final manifest of the run."""
        self.runs[run.parent] = manifest
