"""The MLflow adapter's write side: tracking runs, registration with lineage, the champion gate.

Only the driver calls this. Every write is keyed so that repeating it is a no-op: the parent run
by the pipeline run id, child runs by variant id, logged models and model versions by variant id
(a variant id is a content hash of its whole stage chain, so equal ids mean equal models).
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

from pipelines.select import gate
from pipelines.spec import Spec
from registry.store import artifact_root, bound, check_reachable, client

log = logging.getLogger(__name__)
TAG = "slimline."


def _q(value: str) -> str:
    return value.replace("'", "\\'")


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _flat(prefix: str, cfg: dict[str, Any] | None) -> dict[str, str]:
    if not cfg:
        return {f"{prefix}.method": "none"}
    return {f"{prefix}.{k}": json.dumps(v) if isinstance(v, list | dict) else str(v) for k, v in cfg.items()}


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    out = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    ci = metrics.get("latency_ci_ms")
    if isinstance(ci, list) and len(ci) == 2:
        out["latency_ci_low_ms"], out["latency_ci_high_ms"] = float(ci[0]), float(ci[1])
    return out


class MlflowRegistry:
    """Publishes a finished run's manifest to an MLflow tracking store and model registry."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The MlflowClient, created on first use."""
        if self._client is None:
            self._client = client(self.uri)
        return self._client

    def check(self) -> None:
        """Raise RegistryUnreachable (exit 2) unless the store answers."""
        check_reachable(self.uri)

    def describe(self) -> str:
        """Where results go."""
        return self.uri

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        return str(self.client.create_experiment(name, artifact_location=artifact_root(self.uri)))

    def _find_run(self, exp_id: str, filters: str) -> Any:
        runs = self.client.search_runs([exp_id], filter_string=filters, max_results=1)
        return runs[0] if runs else None

    def _parent(self, exp_id: str, manifest: dict[str, Any], spec: Spec) -> str:
        found = self._find_run(exp_id, f"tags.`{TAG}run_id` = '{_q(manifest['run_id'])}'")
        if found is not None:
            return str(found.info.run_id)
        tags = {
            f"{TAG}run_id": manifest["run_id"],
            f"{TAG}spec_hash": manifest["spec_hash"],
            f"{TAG}status": manifest["status"],
        }
        for key in ("tick_id", "submission_id"):
            if manifest.get(key):
                tags[f"{TAG}{key}"] = str(manifest[key])
        sha = _git_sha()
        if sha:
            tags[f"{TAG}git_sha"] = sha
        run = self.client.create_run(exp_id, run_name=manifest["run_id"], tags=tags)
        rid = str(run.info.run_id)
        params = {
            "model.source": spec.model.source,
            "model.task": spec.model.task,
            "variants": len(manifest["variants"]),
        }
        for k, v in params.items():
            self.client.log_param(rid, k, str(v))
        for k, v in _numeric(manifest["baseline"]).items():
            self.client.log_metric(rid, f"baseline.{k}", v)
        return rid

    def _child(self, exp_id: str, parent: str, row: dict[str, Any]) -> str:
        filters = f"tags.`mlflow.parentRunId` = '{parent}' and tags.`{TAG}variant_id` = '{row['id']}'"
        found = self._find_run(exp_id, filters)
        if found is not None:
            return str(found.info.run_id)
        tags = {"mlflow.parentRunId": parent, f"{TAG}variant_id": row["id"], f"{TAG}status": row["status"]}
        if row.get("reason"):
            tags[f"{TAG}reason"] = str(row["reason"])[:5000]
        run = self.client.create_run(exp_id, run_name=row["label"], tags=tags)
        rid = str(run.info.run_id)
        for k, v in {
            **_flat("pruning", row["pruning"]),
            **_flat("quantization", row["quantization"]),
        }.items():
            self.client.log_param(rid, k, v)
        for k, v in _numeric(row["metrics"]).items():
            self.client.log_metric(rid, k, v)
        self._log_distillation(rid, row.get("distillation"))
        self.client.set_terminated(rid, "FINISHED" if row["status"] in ("succeeded", "cached") else "FAILED")
        return rid

    def _log_distillation(self, rid: str, kd: dict[str, Any] | None) -> None:
        """Distillation settings as params, its loss curve as the metric `distill_loss` by step."""
        if not kd:
            return
        from mlflow.entities import Metric

        for k, v in _flat("distillation", kd.get("config")).items():
            self.client.log_param(rid, k, v)
        now = int(time.time() * 1000)
        curve = [
            Metric("distill_loss", float(loss), now, int(step)) for step, loss in kd.get("loss_curve") or []
        ]
        if curve:
            self.client.log_batch(rid, metrics=curve)

    def _model(self, exp_id: str, child: str, row: dict[str, Any]) -> str | None:
        """The logged model of a variant: reused when any earlier run logged the same variant."""
        vid = row["id"]
        found = self._find_run(
            exp_id, f"tags.`{TAG}variant_id` = '{vid}' and tags.`{TAG}model_id` LIKE 'm-%'"
        )
        if found is not None:
            model_id = str(found.data.tags[f"{TAG}model_id"])
        elif row.get("onnx") and Path(row["onnx"]).is_file():
            model_id = self._log_onnx(child, Path(row["onnx"]))
        else:
            return None
        self.client.set_tag(child, f"{TAG}model_id", model_id)
        return model_id

    def _log_onnx(self, run_id: str, path: Path) -> str:
        import mlflow
        import mlflow.onnx
        import onnx
        from mlflow.models import infer_signature

        from registry.lineage import example_feeds, pip_requirements

        feeds, outputs = example_feeds(path)
        extras = [str(f) for f in sorted(path.parent.iterdir()) if f.suffix in (".json", ".txt")]
        with mlflow.start_run(run_id=run_id):
            info = mlflow.onnx.log_model(
                onnx.load(str(path)),
                name="model",
                signature=infer_signature(feeds, outputs),
                input_example=feeds,
                pip_requirements=pip_requirements(),
                onnx_execution_providers=["CPUExecutionProvider"],
                extra_files=extras,  # the tokenizer and meta.json make a pulled model usable on its own
            )
        return str(info.model_id)

    def _version(self, name: str, vid: str, child: str, model_id: str, tags: dict[str, str]) -> str:
        """The model version of a variant, created only if that variant has none under `name`."""
        from mlflow.exceptions import MlflowException

        found = self.client.search_model_versions(f"name='{_q(name)}' and tag.`{TAG}variant_id`='{vid}'")
        if found:
            return str(found[0].version)
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, tags={f"{TAG}managed": "true"})
        mv = self.client.create_model_version(
            name, source=f"models:/{model_id}", run_id=child, tags=tags, model_id=model_id
        )
        return str(mv.version)

    def _champion(self, name: str, alias: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def publish(self, manifest: dict[str, Any], spec: Spec, run_dir: Path) -> dict[str, Any]:
        """Track the run, register the selected variants, apply the champion gate; returns the manifest.

        The updated manifest (with `registered` and `gate`) is written back to `run_dir`.
        """
        with bound(self.uri):
            return self._publish(manifest, spec, run_dir)

    def _publish(self, manifest: dict[str, Any], spec: Spec, run_dir: Path) -> dict[str, Any]:
        from registry.lineage import version_tags
        from tasks.base import write_json

        exp_id = self._experiment(spec.name)
        parent = self._parent(exp_id, manifest, spec)
        rows = {r["id"]: r for r in manifest["variants"]}
        children = {
            vid: self._child(exp_id, parent, row) for vid, row in rows.items() if row["status"] != "skipped"
        }
        name, alias = spec.registry.model_name or spec.name, spec.registry.alias
        models: dict[str, str | None] = {}
        if spec.registry.log_models == "all":
            for vid, row in rows.items():
                if row["status"] in ("succeeded", "cached"):
                    models[vid] = self._model(exp_id, children[vid], row)
        registered: list[dict[str, Any]] = []
        for vid in manifest["selected"]:
            model_id = models[vid] if vid in models else self._model(exp_id, children[vid], rows[vid])
            if model_id is None:
                continue
            version = self._version(name, vid, children[vid], model_id, version_tags(manifest, rows[vid]))
            registered.append({"name": name, "version": version, "variant": vid})
        manifest["gate"] = self._gate(name, alias, registered, rows, spec)
        for entry in registered:
            entry["aliases"] = sorted(self.client.get_model_version(name, entry["version"]).aliases)
        manifest["registered"] = registered
        self.client.set_tag(parent, f"{TAG}gate", manifest["gate"]["reason"])
        write_json(run_dir / "manifest.json", manifest)
        for f in ("manifest.json", "report.html", "report.md", "spec.json"):
            if (run_dir / f).is_file():
                self.client.log_artifact(parent, str(run_dir / f))
        self.client.set_terminated(parent, "FAILED" if manifest["status"] == "failed" else "FINISHED")
        return manifest

    def _gate(
        self, name: str, alias: str, registered: list[dict[str, Any]], rows: dict[str, Any], spec: Spec
    ) -> dict[str, Any]:
        """Move `alias` to the best new version only if it passes the gate against the champion."""
        if not registered:
            return {"alias": alias, "moved": False, "reason": "nothing registered: no variant was selected"}
        best = registered[0]
        current = self._champion(name, alias)
        decision: dict[str, Any] = {"alias": alias, "candidate": best["version"], "previous": None}
        if current is not None:
            decision["previous"] = str(current.version)
            if str(current.version) == best["version"]:
                return {**decision, "moved": False, "reason": f"version {best['version']} is already {alias}"}
        from registry.lineage import metrics_of

        champion_metrics = metrics_of(current.tags) if current is not None else None
        move, why = gate(rows[best["variant"]]["metrics"], champion_metrics, spec.select)
        if move:
            self.client.set_registered_model_alias(name, alias, best["version"])
        return {**decision, "moved": move, "reason": why}
