"""Resource feasibility: a task that asks for more than any node has waits forever in Ray, so refuse it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slimline.pipelines.errors import FatalInputError


class InfeasibleResources(FatalInputError):
    """The spec's resources cannot be met by the cluster (exit 2, never a hang)."""


@dataclass(frozen=True)
class NodeInfo:
    """One alive Ray node and what it offers."""

    node_id: str
    address: str
    cpus: float
    gpus: float


def alive_nodes(nodes: list[dict[str, Any]]) -> list[NodeInfo]:
    """`ray.nodes()` reduced to the alive nodes and their CPU/GPU totals."""
    return [
        NodeInfo(
            n["NodeID"],
            n.get("NodeManagerAddress", "?"),
            float(n.get("Resources", {}).get("CPU", 0)),
            float(n.get("Resources", {}).get("GPU", 0)),
        )
        for n in nodes
        if n.get("Alive", n.get("alive", False))
    ]


def check_feasible(nodes: list[NodeInfo], cpus_per_task: float, gpus_per_task: float, where: str) -> None:
    """Raise InfeasibleResources unless at least one node can run a task of this shape."""
    if not nodes:
        raise InfeasibleResources(f"the Ray cluster {where} has no alive nodes")
    total_gpus = sum(n.gpus for n in nodes)
    if gpus_per_task > 0 and total_gpus == 0:
        raise InfeasibleResources(
            f"resources.gpus_per_task: asks for {gpus_per_task:g} GPU per task, but the Ray cluster "
            f"{where} has no GPUs (expected gpus_per_task: 0)"
        )
    if not any(n.cpus >= cpus_per_task and n.gpus >= gpus_per_task for n in nodes):
        best_cpu = max(n.cpus for n in nodes)
        best_gpu = max(n.gpus for n in nodes)
        raise InfeasibleResources(
            f"resources: no node of the Ray cluster {where} has {cpus_per_task:g} CPUs and "
            f"{gpus_per_task:g} GPUs for one task (largest node: {best_cpu:g} CPUs, {best_gpu:g} GPUs)"
        )


def slots(nodes: list[NodeInfo], cpus_per_task: float, gpus_per_task: float) -> int:
    """How many tasks of this shape fit on the cluster at once."""
    total = 0
    for n in nodes:
        fit = int(n.cpus // cpus_per_task) if cpus_per_task else 10**6
        if gpus_per_task:
            fit = min(fit, int(n.gpus // gpus_per_task))
        total += fit
    return max(total, 1)


def timing_node(nodes: list[NodeInfo], gpus_per_task: float) -> NodeInfo:
    """The node where latency is timed: the largest one that fits a task (GPU nodes when GPUs are asked)."""
    fits = [n for n in nodes if n.gpus >= gpus_per_task] or nodes
    return max(fits, key=lambda n: (n.cpus, n.node_id))
