"""Publishing a finished run to a registry: what gets registered, and whether the alias moves.

This is policy, so it lives here and speaks only to the Registry port: the MLflow adapter and
the in-memory registry (`--registry none`, unit tests) store what they are told.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..tasks.base import write_json
from .ports import Registry
from .select import gate
from .spec import Spec


def _decide(
    registry: Registry,
    name: str,
    alias: str,
    registered: list[dict[str, Any]],
    rows: dict[str, Any],
    spec: Spec,
) -> dict[str, Any]:
    """Move `alias` to the best new version only if it passes the gate against the current holder."""
    if not registered:
        return {"alias": alias, "moved": False, "reason": "nothing registered: no variant was selected"}
    best = registered[0]
    current = registry.alias_holder(name, alias)
    decision: dict[str, Any] = {"alias": alias, "candidate": best["version"], "previous": None}
    if current is not None:
        decision["previous"] = current.version
        if current.version == best["version"]:
            return {**decision, "moved": False, "reason": f"version {best['version']} is already {alias}"}
    move, why = gate(rows[best["variant"]]["metrics"], current.metrics if current else None, spec.select)
    if move:
        registry.set_alias(name, alias, best["version"])
    return {**decision, "moved": move, "reason": why}


def publish(registry: Registry, manifest: dict[str, Any], spec: Spec, run_dir: Path) -> dict[str, Any]:
    """Track the run, register the selected variants, apply the champion gate; returns the manifest.

    The updated manifest (`registry`, `registered`, `gate`) is written back to `run_dir` before
    the registry closes the run, so the run's folder always says what the store holds.
    """
    run = registry.track(manifest, spec)
    rows = {r["id"]: r for r in manifest["variants"]}
    name, alias = spec.registry.model_name or spec.name, spec.registry.alias
    registered: list[dict[str, Any]] = []
    for vid in manifest["selected"]:
        version = registry.register(name, rows[vid], manifest, run)
        if version is not None:
            registered.append({"name": name, "version": version, "variant": vid})
    manifest["gate"] = _decide(registry, name, alias, registered, rows, spec)
    for entry in registered:
        entry["aliases"] = registry.aliases_of(name, entry["version"])
    manifest["registered"] = registered
    manifest["registry"] = registry.describe()
    write_json(run_dir / "manifest.json", manifest)
    registry.finish(run, manifest, run_dir)
    return manifest
