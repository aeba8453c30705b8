"""Publishing a finished run to a registry: what gets registered, and whether the alias moves.

This is policy, so it lives here and speaks only to the Registry port: the MLflow adapter and
the in-memory registry (`--registry none`, unit tests) store what they are told.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimline.pipelines.locks import single_flight
from slimline.pipelines.ports import Registry
from slimline.pipelines.report.report import write_reports
from slimline.pipelines.run.peers import lost_to_a_peer, outcome_line
from slimline.pipelines.run.records import DONE
from slimline.pipelines.run.select import gate
from slimline.pipelines.spec.spec import Spec
from slimline.tasks.base import write_json


def _decide(
    registry: Registry,
    manifest: dict[str, Any],
    registered: list[dict[str, Any]],
    rows: dict[str, Any],
    spec: Spec,
) -> dict[str, Any]:
    """Move the alias to the best new version only if it beats the holder, as measured in this run."""
    name, alias = spec.registry.model_name or spec.name, spec.registry.alias
    if not registered:
        return {"alias": alias, "moved": False, "reason": "nothing registered: no variant was selected"}
    best = registered[0]
    current = registry.alias_holder(name, alias)
    decision: dict[str, Any] = {"alias": alias, "candidate": best["version"], "previous": None}
    candidate = rows[best["variant"]]["metrics"]
    fit, why = gate(candidate, None, spec.select)  # the constraints first: no champion needed for a no
    if not fit:
        return {**decision, "previous": current.version if current else None, "moved": False, "reason": why}
    champion: dict[str, Any] | None = None
    ratio = None
    if current is not None:
        decision["previous"] = current.version
        if current.version == best["version"]:
            return {**decision, "moved": False, "reason": f"version {best['version']} is already {alias}"}
        measured = manifest.get("champion") or {}
        if measured.get("version") != current.version or measured.get("error") or not measured.get("metrics"):
            why = measured.get("error") or "it was not measured in this run"
            reason = f"{alias} stays on version {current.version}: {why}; never compared with old numbers"
            return {**decision, "moved": False, "reason": reason}
        champion, ratio = measured["metrics"], measured.get("ratios", {}).get(best["variant"])
    move, why = gate(
        candidate,
        champion,
        spec.select,
        ratio=ratio,
        min_gain=spec.registry.min_gain,
        fidelity_epsilon=spec.registry.fidelity_epsilon,
    )
    if move:
        registry.set_alias(name, alias, best["version"])
    return {**decision, "moved": move, "reason": why, "ratio": ratio}


def publish(registry: Registry, manifest: dict[str, Any], spec: Spec, run_dir: Path) -> dict[str, Any]:
    """Track the run, register the selected variants, apply the champion gate; returns the manifest.

    The updated manifest (`registry`, `registered`, `gate`) is written back to `run_dir` before
    the registry closes the run, so the run's folder always says what the store holds. One
    publisher per model name at a time (a file lock beside the runs): two runs finishing together
    must not both find "no version yet" and register the same variant twice, nor race the alias.
    Every step finds what an interrupted publish already did, so publishing again resumes it.
    """
    name = spec.registry.model_name or spec.name
    with single_flight(run_dir.parent / ".locks" / f"publish-{name}.lock", wait=True):
        return _publish(registry, manifest, spec, run_dir)


def _publish(registry: Registry, manifest: dict[str, Any], spec: Spec, run_dir: Path) -> dict[str, Any]:
    # `log_models: all` keeps every finished variant's graph in the store, not only the registered ones.
    every = spec.registry.log_models == "all"
    logged = [r["id"] for r in manifest["variants"] if every and r["status"] in DONE]
    run = registry.track(manifest, spec, logged)
    rows = {r["id"]: r for r in manifest["variants"]}
    name = spec.registry.model_name or spec.name
    registered: list[dict[str, Any]] = []
    # select.beat_peers: a pick that a peer's one-line recipe beats is not worth registering.
    refused = spec.select.beat_peers and lost_to_a_peer(manifest.get("peers"))
    for vid in [] if refused else manifest["selected"]:
        version = registry.register(name, rows[vid], manifest, run)
        if version is not None:
            registered.append({"name": name, "version": version, "variant": vid})
    manifest["gate"] = _decide(registry, manifest, registered, rows, spec)
    if refused:
        why = f"nothing registered (select.beat_peers): {outcome_line(manifest['peers'])}"
        manifest["gate"] = {**manifest["gate"], "moved": False, "reason": why}
    for entry in registered:
        entry["aliases"] = registry.aliases_of(name, entry["version"])
    manifest["registered"] = registered
    manifest["registry"] = registry.describe()
    write_json(run_dir / "manifest.json", manifest)
    if (run_dir / "report.md").is_file():  # the run wrote its reports: now they say the gate's decision
        write_reports(manifest, run_dir, spec.select)
    registry.finish(run, manifest, run_dir)
    return manifest
