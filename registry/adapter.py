"""The MLflow adapter behind the Registry port: tracking runs, model versions with lineage, aliases.

It holds no policy (what to register and when an alias moves are decided in
pipelines.publish). Only the driver calls it. Every write is keyed so that repeating it is a
no-op: the parent run by the pipeline run id, child runs by variant id, logged models and model
versions by variant id (a variant id is a content hash of its whole stage chain, so equal ids
mean equal models).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slimline.pipelines.ports import RegisteredVersion, TrackedRun
from slimline.pipelines.run.records import DONE, RunStatus, Status, numeric
from slimline.pipelines.spec.spec import Spec
from slimline.registry.lineage import TAG, metrics_of, version_description, version_tags
from slimline.registry.store import artifact_root, bound, check_reachable, client, mask_secrets, masked


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


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
    out = numeric(metrics)
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
        """Where results go, without any password in the URI (it reaches manifests and logs)."""
        return masked(self.uri)

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
            f"{TAG}publisher": f"{socket.gethostname()}:{os.getpid()}",  # who may still finish it
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
            "model.source": masked(spec.model.source),
            "model.task": spec.model.task,
            "variants": len(manifest["variants"]),
        }
        for k, v in params.items():
            self.client.log_param(rid, k, str(v))
        for k, v in _numeric(manifest["baseline"]).items():
            self.client.log_metric(rid, f"baseline.{k}", v)
        base = next((r for r in manifest["variants"] if r["id"] == manifest["baseline"].get("variant")), {})
        for k, v in _numeric(base.get("served") or {}).items():
            self.client.log_metric(rid, f"baseline.served.{k}", v)
        return rid

    def _child(self, exp_id: str, parent: str, row: dict[str, Any]) -> str:
        filters = f"tags.`mlflow.parentRunId` = '{parent}' and tags.`{TAG}variant_id` = '{row['id']}'"
        found = self._find_run(exp_id, filters)
        if found is not None:
            return str(found.info.run_id)
        tags = {"mlflow.parentRunId": parent, f"{TAG}variant_id": row["id"], f"{TAG}status": row["status"]}
        if row.get("reason"):
            tags[f"{TAG}reason"] = mask_secrets(str(row["reason"]))[:5000]
        run = self.client.create_run(exp_id, run_name=row["label"], tags=tags)
        rid = str(run.info.run_id)
        for k, v in {
            **_flat("pruning", row["pruning"]),
            **_flat("quantization", row["quantization"]),
        }.items():
            self.client.log_param(rid, k, v)
        for k, v in _numeric(row["metrics"]).items():
            self.client.log_metric(rid, k, v)
        for k, v in _numeric(row.get("served") or {}).items():  # evaluate.serving: its endpoint's load
            self.client.log_metric(rid, f"served.{k}", v)
        self._log_distillation(rid, row.get("distillation"))
        self.client.set_terminated(rid, "FINISHED" if row["status"] in DONE else "FAILED")
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
        elif (logged := self._logged_on(exp_id, child)) is not None:
            model_id = logged  # a publish that died before tagging it: the model is there already
        elif row.get("onnx") and Path(row["onnx"]).is_file():
            model_id = self._log_onnx(child, Path(row["onnx"]))
        else:
            return None
        self.client.set_tag(child, f"{TAG}model_id", model_id)
        return model_id

    def _logged_on(self, exp_id: str, child: str) -> str | None:
        """A finished model already logged on the child run; unfinished ones (an upload cut off)
        are marked failed, so that only the one logged next remains usable."""
        from mlflow.entities import LoggedModelStatus

        ready = None
        for m in self.client.search_logged_models([exp_id], filter_string=f"source_run_id = '{_q(child)}'"):
            if m.status == LoggedModelStatus.READY:
                ready = ready or str(m.model_id)
            elif m.status == LoggedModelStatus.PENDING:
                self.client.finalize_logged_model(m.model_id, LoggedModelStatus.FAILED)
        return ready

    def _log_onnx(self, run_id: str, path: Path) -> str:
        import mlflow
        import mlflow.onnx
        import onnx
        from mlflow.models import infer_signature

        from slimline.registry.lineage import example_feeds, pip_requirements

        feeds, outputs = example_feeds(path)
        extras = [str(f) for f in sorted(path.parent.iterdir()) if f.suffix in (".json", ".txt")]
        with mlflow.start_run(run_id=run_id):
            info = mlflow.onnx.log_model(
                onnx.load(str(path)),
                name="model",
                signature=infer_signature(feeds, outputs),
                # An empty KV cache (0 past tokens) does not survive MLflow's JSON round trip of the
                # example (its shape is lost), so MLflow's check of it fails, printing every input:
                # a decoding graph gets the signature alone.
                input_example=None if any(k.startswith("past_key_values.") for k in feeds) else feeds,
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

    # ------------------------------------------------------------------ the Registry port
    def _close_stale(self, exp_id: str, run_id: str) -> None:
        """Parent runs left RUNNING by a publisher that died: its process is gone from this host,
        or it started over a day ago. They are closed KILLED (a re-push of that run reopens none:
        it finds the run by its id and finishes it)."""
        host = socket.gethostname()
        day_ago = (time.time() - 86_400) * 1000
        for r in self.client.search_runs(
            [exp_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{TAG}publisher` LIKE '%:%'"
        ):
            if r.data.tags.get(f"{TAG}run_id") == run_id:
                continue
            where, _, pid = r.data.tags[f"{TAG}publisher"].rpartition(":")
            if (where == host and not _alive(int(pid))) or r.info.start_time < day_ago:
                self.client.set_tag(r.info.run_id, f"{TAG}stale", "its publisher stopped before finishing")
                self.client.set_terminated(r.info.run_id, "KILLED")

    def track(self, manifest: dict[str, Any], spec: Spec, log_models: Sequence[str] = ()) -> TrackedRun:
        """The parent run and one child run per variant, with the ONNX models of `log_models`."""
        with bound(self.uri):
            exp = self._experiment(spec.name)
            self._close_stale(exp, manifest["run_id"])
            run = TrackedRun(self._parent(exp, manifest, spec), experiment=exp)
            for row in manifest["variants"]:
                if row["status"] != Status.SKIPPED:
                    run.children[row["id"]] = self._child(exp, run.parent, row)
            for row in manifest["variants"]:
                if row["id"] in log_models:
                    self._model(exp, run.children[row["id"]], row)
        return run

    def register(
        self, name: str, row: dict[str, Any], manifest: dict[str, Any], run: TrackedRun
    ) -> str | None:
        """The version of `name` holding this variant, created (with lineage tags) only once."""
        with bound(self.uri):
            model_id = self._model(run.experiment, run.children[row["id"]], row)
            if model_id is None:
                return None
            tags = version_tags(manifest, row)
            version = self._version(name, row["id"], run.children[row["id"]], model_id, tags)
            self.client.update_model_version(name, version, description=version_description(manifest, row))
            return version

    def alias_holder(self, name: str, alias: str) -> RegisteredVersion | None:
        """The version `alias` points at, with the metrics it was registered with."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            # No such model, or no such alias: no champion. Anything else (a store gone) is raised.
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return RegisteredVersion(name, str(mv.version), mv.tags.get(f"{TAG}variant_id"), metrics_of(mv.tags))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point `alias` at `version`; the registered model's description says what it now is."""
        self.client.set_registered_model_alias(name, alias, version)
        mv = self.client.get_model_version(name, version)
        since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        label = mv.tags.get(f"{TAG}label", "")
        said = f"`{alias}` is version {version}, **{label}**, since {since}."
        self.client.update_registered_model(name, description=f"{said}\n\n{mv.description or ''}")

    def fetch(self, name: str, version: str, dest: Path) -> Path:
        """Download the version's logged model (graph, tokenizer, meta.json) into `dest`."""
        from slimline.registry.browse import Browser, Ref

        return Browser(self.uri).pull(Ref(name, version=version), dest, force=True)  # our own cache folder

    def aliases_of(self, name: str, version: str) -> list[str]:
        """The aliases of one version."""
        return sorted(self.client.get_model_version(name, version).aliases)

    def finish(self, run: TrackedRun, manifest: dict[str, Any], run_dir: Path) -> None:
        """The gate's reason as a tag, the manifest and reports as artifacts, then close the run."""
        gate = manifest.get("gate") or {}
        self.client.set_tag(run.parent, f"{TAG}gate", gate.get("reason", ""))
        self.client.set_tag(run.parent, f"{TAG}gate_moved", str(bool(gate.get("moved"))).lower())
        if gate.get("ratio"):  # the candidate's paired latency ratio to the champion: median, CI
            self.client.set_tag(run.parent, f"{TAG}gate_ratio", json.dumps(gate["ratio"]))
        for f in ("manifest.json", "report.html", "report.md", "spec.json"):
            if (run_dir / f).is_file():
                self.client.log_artifact(run.parent, str(run_dir / f))
        status = "FAILED" if manifest["status"] == RunStatus.FAILED else "FINISHED"
        self.client.set_terminated(run.parent, status)
