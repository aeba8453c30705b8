"""The MLflow adapter's read side: model references, listing, details, comparison, promotion, pull."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..pipelines.errors import FatalInputError
from .lineage import TAG, metrics_of
from .store import bound, client

KEY_METRICS = ("fidelity", "speedup_vs_baseline", "latency_p50_ms", "size_mb")


class UnknownModel(FatalInputError):
    """No such registered model, version or alias (exit 2)."""


@dataclass(frozen=True)
class Ref:
    """NAME, NAME@alias or NAME/version."""

    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Ref:
        """Parse a model reference, or raise UnknownModel with what is expected."""
        m = re.fullmatch(r"([^@/]+)(?:@([^@/]+)|/(\d+))?", text.strip())
        if not m:
            raise UnknownModel(f"{text!r}: expected NAME, NAME@alias or NAME/version")
        return cls(m.group(1), m.group(2), m.group(3))

    def __str__(self) -> str:
        return self.name + (f"@{self.alias}" if self.alias else f"/{self.version}" if self.version else "")


class Browser:
    """Read-mostly access to the registry of one tracking store."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.client = client(uri)

    def _model(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException:
            known = ", ".join(m.name for m in self.client.search_registered_models(max_results=50)) or "none"
            raise UnknownModel(f"no registered model {name!r} in {self.uri} (known: {known})") from None

    def version(self, ref: Ref) -> Any:
        """The model version a reference names (the latest version for a bare NAME)."""
        from mlflow.exceptions import MlflowException

        model = self._model(ref.name)
        if ref.alias:
            if ref.alias not in model.aliases:
                have = ", ".join(f"{a}->v{v}" for a, v in model.aliases.items()) or "none"
                raise UnknownModel(f"{ref}: model {ref.name!r} has no alias {ref.alias!r} (aliases: {have})")
            return self.client.get_model_version_by_alias(ref.name, ref.alias)
        if ref.version:
            try:
                return self.client.get_model_version(ref.name, ref.version)
            except MlflowException:
                raise UnknownModel(f"{ref}: model {ref.name!r} has no version {ref.version}") from None
        versions = self.client.search_model_versions(f"name='{ref.name}'", order_by=["version_number DESC"])
        if not versions:
            raise UnknownModel(f"{ref}: model {ref.name!r} has no versions")
        return versions[0]

    def ls(self) -> list[dict[str, Any]]:
        """Every registered model: latest version, aliases and the key metrics of the latest."""
        rows = []
        for model in self.client.search_registered_models(max_results=1000):
            latest = self.version(Ref(model.name))
            rows.append(
                {
                    "name": model.name,
                    "latest": str(latest.version),
                    "versions": len(self.client.search_model_versions(f"name='{model.name}'")),
                    "aliases": {a: str(v) for a, v in model.aliases.items()},
                    "label": latest.tags.get(f"{TAG}label", ""),
                    "metrics": {k: v for k, v in metrics_of(latest.tags).items() if k in KEY_METRICS},
                }
            )
        return rows

    def show(self, ref: Ref) -> dict[str, Any]:
        """One version: metrics, lineage tags, technique configs and where its ONNX file is."""
        mv = self.version(ref)
        tags = dict(mv.tags)
        model = self._model(ref.name)
        return {
            "name": mv.name,
            "version": str(mv.version),
            "aliases": sorted(a for a, v in model.aliases.items() if str(v) == str(mv.version)),
            "variant": tags.get(f"{TAG}variant_id"),
            "label": tags.get(f"{TAG}label"),
            "metrics": metrics_of(tags),
            "pruning": json.loads(tags.get(f"{TAG}pruning", "null")),
            "quantization": json.loads(tags.get(f"{TAG}quantization", "null")),
            "lineage": {
                k[len(TAG) :]: v
                for k, v in tags.items()
                if k.startswith(TAG)
                and k[len(TAG) :] not in ("pruning", "quantization", "label", "variant_id", "metrics")
            },
            "source": mv.source,
            "run_id": mv.run_id,
            "onnx_path": tags.get(f"{TAG}onnx_path"),
        }

    def compare(self, name: str, a: str, b: str) -> dict[str, dict[str, float]]:
        """Metrics of two versions (or aliases) of one model, side by side."""
        out = {}
        for which in (a, b):
            bare = which.lstrip("@v")
            ref = Ref(name, version=bare) if bare.isdigit() else Ref(name, alias=which.lstrip("@"))
            out[str(ref)] = metrics_of(self.version(ref).tags)
        return out

    def promote(self, name: str, version: str, alias: str) -> None:
        """Point `alias` at `version` by hand (the gate is for automatic moves)."""
        self.version(Ref(name, version=version))
        self.client.set_registered_model_alias(name, alias, version)

    def pull(self, ref: Ref, out_dir: Path) -> Path:
        """Download a version's ONNX model folder into `out_dir`; returns the model.onnx path."""
        import mlflow.artifacts

        mv = self.version(ref)
        out_dir.mkdir(parents=True, exist_ok=True)
        with bound(self.uri):  # models:/ URIs are resolved through the process-wide registry URI
            got = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{mv.name}/{mv.version}",
                    dst_path=str(out_dir),
                    tracking_uri=self.uri,
                )
            )
        onnx_files = sorted(got.rglob("model.onnx"))
        if not onnx_files:
            raise UnknownModel(f"{ref}: version {mv.version} has no model.onnx in its artifacts")
        # The tokenizer and meta.json were logged as extra files: put them beside the graph, so the
        # pulled folder is what slimline itself evaluates (and what a server would load).
        for extra in got.rglob("extra_files/*"):
            if extra.is_file() and not (onnx_files[0].parent / extra.name).exists():
                shutil.copy2(extra, onnx_files[0].parent / extra.name)
        return onnx_files[0]
