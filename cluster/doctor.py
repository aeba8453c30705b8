"""`slimline doctor --address`: the machine facts and the int8 probe of every alive node of a cluster."""

from __future__ import annotations

from typing import Any


def per_node(address: str, seconds: float) -> dict[str, dict[str, Any]]:
    """Node address -> what `tasks.cpu_probe.machine_facts` says there (run on that very node)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from slimline.cluster.resources import alive_nodes
    from slimline.tasks.cpu_probe import machine_facts

    ray.init(address=address, log_to_driver=False, include_dashboard=False)
    try:
        probe = ray.remote(num_cpus=1)(machine_facts)
        nodes = alive_nodes(ray.nodes())
        refs = {
            n.address: probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)
            ).remote(seconds)
            for n in nodes
        }
        return {where: ray.get(ref) for where, ref in refs.items()}
    finally:
        ray.shutdown()
