"""A bounded HTTP load on a served model: what `evaluate.serving` and benchmarks/serve.py measure.

`requests` POSTs of `per` texts each (a GET when `per` is 0), `concurrency` in flight on one
asyncio httpx client, stopping at a deadline as well as a count; latency percentiles are of the
successful requests, and every other outcome is counted as an error.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import numpy as np


async def load(
    url: str, texts: list[str], requests: int, concurrency: int, per: int = 1, deadline_s: float = 120.0
) -> dict[str, Any]:
    """{rps, texts_per_s, p50_ms, p95_ms, p99_ms, errors, requests} of one load on `url`."""
    latencies: list[float] = []
    errors: list[str] = []
    todo = iter(range(requests))
    deadline = time.monotonic() + deadline_s

    async def worker(client: httpx.AsyncClient) -> None:
        for i in todo:
            if time.monotonic() > deadline:
                errors.append("deadline")
                continue
            t0 = time.perf_counter()
            try:
                batch = [texts[(i * per + j) % len(texts)] for j in range(per)]
                r = await (client.post(url, json={"texts": batch}) if per else client.get(url))
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors.append(str(r.status_code))
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    rps = len(latencies) / wall
    return {
        "rps": rps,
        "texts_per_s": rps * max(per, 1),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": len(errors),
        "requests": requests,
    }


def run_load(
    url: str, texts: list[str], requests: int, concurrency: int, per: int = 1, deadline_s: float = 120.0
) -> dict[str, Any]:
    """`load` from synchronous code (its own event loop)."""
    return asyncio.run(load(url, texts, requests, concurrency, per, deadline_s))
