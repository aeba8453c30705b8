"""The MLflow adapter's read side: model references, listing, details, comparison, promotion, pull."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimline.pipelines.errors import FatalInputError, did_you_mean
from slimline.pipelines.metrics import key_metrics
from slimline.registry.lineage import TAG, metrics_of
from slimline.registry.store import alias_problem, bound, client, require_store

KEY_METRICS = key_metrics()  # shown beside each model by `slimline registry ls`


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


def _summary(mv: Any) -> dict[str, Any]:
    """A version's number, label and key metrics (for listings)."""
    tags = dict(mv.tags) if mv is not None else {}
    return {
        "version": str(mv.version) if mv is not None else "-",
        "label": tags.get(f"{TAG}label", ""),
        "metrics": {k: v for k, v in metrics_of(tags).items() if k in KEY_METRICS},
    }


class Browser:
    """Read-mostly access to the registry of one tracking store."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        require_store(uri)
        self.client = client(uri)

    def _model(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException:
            names = [m.name for m in self.client.search_registered_models(max_results=1000)]
            hint = did_you_mean(name, names)
            known = ", ".join(names[:50]) or "none"
            raise UnknownModel(f"no registered model {name!r} in {self.uri}{hint} (known: {known})") from None

    def version(self, ref: Ref) -> Any:
        """The model version a reference names (the latest version for a bare NAME)."""
        from mlflow.exceptions import MlflowException

        model = self._model(ref.name)
        if ref.alias:
            if ref.alias not in model.aliases:
                have = ", ".join(f"{a}->v{v}" for a, v in model.aliases.items()) or "none"
                hint = did_you_mean(ref.alias, model.aliases)
                missing = f"{ref}: model {ref.name!r} has no alias {ref.alias!r}{hint}"
                raise UnknownModel(f"{missing} (aliases: {have})")
            return self.client.get_model_version_by_alias(ref.name, ref.alias)
        if ref.version:
            try:
                return self.client.get_model_version(ref.name, ref.version)
            except MlflowException:
                raise UnknownModel(f"{ref}: model {ref.name!r} has no version {ref.version}") from None
        versions = self._versions(ref.name)
        if not versions:
            raise UnknownModel(f"{ref}: model {ref.name!r} has no versions")
        return max(versions, key=lambda v: int(v.version))

    def _versions(self, name: str) -> list[Any]:
        """Every version of a model. MLflow's filter language has no escape for a quote, so a
        name with one (made outside slimline) is matched here instead of in the filter."""
        if "'" not in name:
            return list(self.client.search_model_versions(f"name='{name}'"))
        return [v for v in self.client.search_model_versions() if v.name == name]

    def ls(self, alias: str = "champion") -> list[dict[str, Any]]:
        """Every registered model: its `alias` holder (the champion) and its latest version, each
        with its label and key metrics, and every alias. `label`/`metrics` are the latest's."""
        rows = []
        for model in self.client.search_registered_models(max_results=1000):
            versions = self._versions(model.name)
            latest = max(versions, key=lambda v: int(v.version)) if versions else None
            held = str(model.aliases.get(alias, ""))
            champion = next((v for v in versions if str(v.version) == held), None)
            rows.append(
                {
                    "name": model.name,
                    "latest": str(latest.version) if latest else "-",  # registered, nothing in it yet
                    "versions": len(versions),
                    "aliases": {a: str(v) for a, v in model.aliases.items()},
                    **_summary(latest),
                    "champion": {"alias": alias, **_summary(champion)} if champion else None,
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
        problem = alias_problem(alias)
        if problem:
            raise FatalInputError(f"--alias {alias!r}: {problem}")
        self.version(Ref(name, version=version))
        self.client.set_registered_model_alias(name, alias, version)

    def pull(self, ref: Ref, out_dir: Path, force: bool = False) -> Path:
        """Download a version's ONNX model, tokenizer and meta.json into `out_dir` (which must be
        empty unless `force`); returns the model.onnx path."""
        import mlflow.artifacts

        mv = self.version(ref)
        if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not force)):
            raise FatalInputError(f"-o {out_dir}: not an empty folder (--force writes into it anyway)")
        out_dir.mkdir(parents=True, exist_ok=True)
        # Download beside it first: only this version's files may end up as out_dir/model.onnx.
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
            with bound(self.uri):  # models:/ URIs resolve through the process-wide registry URI
                got = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=tmp, tracking_uri=self.uri
                    )
                )
            onnx_files = sorted(got.rglob("model.onnx"))
            if not onnx_files:
                raise UnknownModel(f"{ref}: version {mv.version} has no model.onnx in its artifacts")
            folder = onnx_files[0].parent
            # The tokenizer and meta.json were logged as extra files: put them beside the graph, so
            # the pulled folder is what slimline itself evaluates (and what a server would load).
            for extra in got.rglob("extra_files/*"):
                if extra.is_file() and not (folder / extra.name).exists():
                    shutil.copy2(extra, folder / extra.name)
            for item in folder.iterdir():
                target = out_dir / item.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(item, target)
        return out_dir / "model.onnx"


def pull_version(uri: str, name: str, version: str, dest: Path) -> Path:
    """Pull NAME/version's graph folder into `dest` (a serving replica on a node without it)."""
    return Browser(uri).pull(Ref(name, version=version), Path(dest), force=True)


def lineage_of(mv: Any) -> dict[str, str]:
    """The identity a server reports for a version: variant id (a hash of its whole stage
    chain), the run and spec that made it, and the base model's digest."""
    tags = dict(mv.tags)
    keys = ("variant_id", "run_id", "spec_hash", "base_model_digest")
    return {k: tags[f"{TAG}{k}"] for k in keys if f"{TAG}{k}" in tags}


def cached_pull(browser: Browser, mv: Any, cache: Path) -> Path:
    """The version's graph folder under `cache`, pulled once: keyed by name, version and run, so a
    store rebuilt with the same version numbers never serves a stale copy."""
    folder = Path(cache) / re.sub(r"[^A-Za-z0-9._-]+", "_", mv.name) / f"v{mv.version}-{str(mv.run_id)[:12]}"
    if not (folder / "model.onnx").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        browser.pull(Ref(mv.name, version=str(mv.version)), tmp, force=True)
        if (folder / "model.onnx").is_file():  # another server pulled it meanwhile
            shutil.rmtree(tmp)
        else:
            if folder.exists():  # a half-written copy from an interrupted pull
                shutil.rmtree(folder)
            os.replace(tmp, folder)
    return folder
