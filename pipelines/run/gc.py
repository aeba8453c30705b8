"""`slimline gc`: remove stage outputs no kept variant needs, without breaking the cache of the rest.

A stage is its output folder `<artifacts>/stages/<id>/` and its record `<id>.json`; removing both
makes a rerun recompute it, while a stage that is kept is reused as it is. What is kept follows
the spec's `artifacts.keep`, read against the latest run of each spec name under the root:
- all: every stage any run's manifest names (only leftovers of old plans are removable);
- selected: the latest run's baseline, selected and registered variants, and every stage they
  were built from or read (a rerun of the same spec recomputes none of them);
- registered: the latest run's baseline and registered variants only.
Stages newer than the newest finished manifest belong to a run still going and are never touched.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimline.pipelines import leases
from slimline.pipelines.locks import Busy, single_flight
from slimline.tasks.base import dir_size_bytes, read_json_or_none


@dataclass
class Removal:
    """What gc would do: stage ids to remove (oldest first) and the bytes involved."""

    remove: list[str] = field(default_factory=list)
    freed: int = 0
    before: int = 0
    kept: int = 0
    busy: list[str] = field(default_factory=list)  # stages a running process holds
    leased: dict[str, str] = field(default_factory=dict)  # stages a running run reads: who

    @property
    def after(self) -> int:
        return self.before - self.freed


def _stage_ids(stages: Path) -> dict[str, list[Path]]:
    """Every stage under the folder, with its files (record and output folder)."""
    found: dict[str, list[Path]] = {}
    for p in stages.iterdir() if stages.is_dir() else []:
        if p.name.startswith("."):
            continue  # locks and temporary folders of stages being written
        sid = p.name[: -len(".json")] if p.suffix == ".json" else p.name
        found.setdefault(sid, []).append(p)
    return found


def _latest_runs(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every readable manifest, the latest of each spec name)."""
    manifests = []
    for path in root.glob("*/manifest.json"):
        m = read_json_or_none(path, "manifest")
        if isinstance(m, dict) and isinstance(m.get("variants"), list):
            spec = read_json_or_none(path.parent / "spec.json", "spec") or {}
            m["_name"] = spec.get("name") or str(m.get("run_id", "")).rsplit("-", 2)[0]
            manifests.append(m)
    latest: dict[str, dict[str, Any]] = {}
    for m in manifests:
        if m["_name"] not in latest or str(m.get("started")) > str(latest[m["_name"]].get("started")):
            latest[m["_name"]] = m
    return manifests, list(latest.values())


def _kept(manifests: list[dict[str, Any]], latest: list[dict[str, Any]], keep: str) -> set[str] | None:
    """Stage ids to keep, or None when a manifest predates stage lists (then nothing is removed)."""
    chosen: list[dict[str, Any]] = []
    for m in manifests if keep == "all" else latest:
        if any("stages" not in v for v in m["variants"]):
            return None
        if keep == "all":
            chosen += m["variants"]
            continue
        wanted = {m.get("baseline", {}).get("variant"), *(r["variant"] for r in m.get("registered") or [])}
        if keep == "selected":
            wanted |= set(m.get("selected") or [])
        chosen += [v for v in m["variants"] if v["id"] in wanted]
    return {sid for v in chosen for sid in v["stages"]}


def plan(root: Path, keep: str, max_bytes: int | None = None) -> Removal:
    """What to remove under `root` (all removable stages, or the oldest until under `max_bytes`)."""
    stages = _stage_ids(root / "stages")
    out = Removal(before=sum(dir_size_bytes(p) for files in stages.values() for p in files))
    manifests, latest = _latest_runs(root)
    kept = _kept(manifests, latest, keep)
    if kept is None or not manifests:
        out.kept = len(stages)
        return out
    newest = max(str(m.get("finished") or "") for m in manifests)
    candidates = []
    for sid, files in stages.items():
        record = read_json_or_none(root / "stages" / f"{sid}.json", "stage record") or {}
        finished = record.get("interval", [None, None])[1]
        if sid in kept or not record or _after(finished, newest):
            continue  # kept, unfinished (a run is writing it), or newer than every manifest
        candidates.append((min(p.stat().st_mtime for p in files), sid, sum(dir_size_bytes(p) for p in files)))
    out.kept = len(stages) - len(candidates)
    total = out.before
    for _, sid, size in sorted(candidates):
        if max_bytes is not None and total <= max_bytes:
            break
        out.remove.append(sid)
        out.freed += size
        total -= size
    return out


def _after(epoch: float | None, iso: str) -> bool:
    """Whether a record finished after the newest manifest did (so a later run produced it)."""
    import datetime as dt

    if epoch is None or not iso:
        return True
    try:
        return dt.datetime.fromtimestamp(epoch, dt.UTC) > dt.datetime.fromisoformat(iso)
    except ValueError:
        return True


def apply(root: Path, gc_plan: Removal) -> Removal:
    """Remove the planned stages; one a process is computing right now (its lock held) or a
    running run will read (its lease, pipelines.leases) is left."""
    stages = root / "stages"
    with leases.gate(stages, exclusive=True):
        held = leases.leased(stages)
        for sid in list(gc_plan.remove):
            if sid in held:
                gc_plan.leased[sid] = held[sid]
                gc_plan.remove.remove(sid)
                gc_plan.freed -= sum(
                    dir_size_bytes(p) for p in (stages / f"{sid}.json", stages / sid) if p.exists()
                )
                continue
            try:
                with single_flight(stages / ".locks" / f"{sid}.lock"):
                    (stages / f"{sid}.json").unlink(missing_ok=True)  # the record first: never a
                    shutil.rmtree(stages / sid, ignore_errors=True)  # record without its output
            except Busy:
                gc_plan.remove.remove(sid)
                gc_plan.busy.append(sid)
    return gc_plan


def parse_size(text: str) -> int:
    """'5GB', '500M', '1.5 GiB', '1000' (bytes) as bytes."""
    units = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    t = text.strip().upper().replace("IB", "").removesuffix("B") or "0"
    num, unit = (t[:-1], t[-1]) if t[-1] in units else (t, "")
    try:
        value = float(num)
    except ValueError:
        raise ValueError(f"{text!r}: expected a size such as 5GB, 500MB or 1000000") from None
    if value < 0:
        raise ValueError(f"{text!r}: a size cannot be negative")
    return int(value * units[unit])
