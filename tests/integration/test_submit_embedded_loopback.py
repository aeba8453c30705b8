"""`slimline run` without --address starts a Ray of its own: nothing of it may listen beyond loopback.

(Named test_submit_* with the other cluster-submission tests; it needs no cluster.)
"""

from __future__ import annotations

import ipaddress
import os

import pytest


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _listening(procs: list) -> list[tuple[int, str, str, int]]:
    import psutil

    out = []
    for p in procs:
        try:
            name = p.name()
            out += [
                (p.pid, name, c.laddr.ip, c.laddr.port)
                for c in p.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN
            ]
        except psutil.Error:  # a worker that exited meanwhile
            continue
    return out


def _pid() -> int:
    return os.getpid()


def test_embedded_ray_listens_on_loopback_only() -> None:
    import ray  # puts Ray's own psutil on the import path

    psutil = pytest.importorskip("psutil")
    from ray._private import ray_constants

    from slimline.cluster.ray_executor import RayExecutor

    if ray.is_initialized():
        pytest.skip("a Ray of this process is already running")
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    mine_before = set(_listening([me]))
    # No stages: only the Ray it starts matters here (and workers, started by two tasks).
    with RayExecutor(num_cpus=2, warm=False, stage_fn=lambda *a: {}) as ex:
        assert ex.describe().address == "embedded"
        ray.get([ray.remote(_pid).remote() for _ in range(2)])
        started = [p for p in me.children(recursive=True) if p.pid not in before]
        sockets = [s for s in _listening([me, *started]) if s not in mine_before]
        names = {name for _, name, _, _ in sockets}
        # GCS, raylet, agents and workers all listen on something: all of them must be loopback.
        assert {"gcs_server", "raylet"} <= names, sockets
        assert any(n.startswith("ray::") for n in names), sockets
        assert [s for s in sockets if not _loopback(s[2])] == []
    # Only while starting it: a later ray.init(address=...) to a real cluster uses the host's address.
    assert ray_constants.ENABLE_RAY_CLUSTER is True
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
