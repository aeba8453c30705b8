"""The artifact root must be one folder seen by every node: stages on one node read what another wrote."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

from slimline.cluster.resources import NodeInfo
from slimline.pipelines.errors import FatalInputError


class ArtifactRootNotShared(FatalInputError):
    """Some node cannot see the artifact root (exit 2)."""


def _sees(path: str, token: str) -> bool:
    p = Path(path)
    return p.is_file() and p.read_text() == token


def check_shared_root(ray: Any, nodes: list[NodeInfo], root: Path) -> None:
    """Write a probe file from the driver and have a task on every node read it back."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root.mkdir(parents=True, exist_ok=True)
    probe_dir = root / ".slimline-probe"
    probe_dir.mkdir(exist_ok=True)
    token = secrets.token_hex(8)
    probe = probe_dir / token
    probe.write_text(token)
    try:
        sees = ray.remote(_sees)
        refs = {
            n.address: sees.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)
            ).remote(str(probe), token)
            for n in nodes
        }
        blind = [addr for addr, ref in refs.items() if not ray.get(ref, timeout=120)]
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    if blind:
        raise ArtifactRootNotShared(
            f"artifacts: {root} is not visible from node(s) {', '.join(blind)}; expected a folder every "
            "node mounts at the same path (NFS, a shared volume)"
        )
