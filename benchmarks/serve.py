"""Serving benchmark: the fp32 baseline and the registered champion on Ray Serve, under load.

    python benchmarks/serve.py [--json] [--model minilm-compressed] [--alias champion]
                               [--spec pipelines/examples/minilm-cpu.yaml] [--requests 300]
                               [--concurrency 1,8,32] [--texts-per-request 1,8] [--rounds 3]
                               [--tracking-uri URI]

1. The champion is NAME@alias in the registry (the spec's store). Its run's manifest (under the
   spec's artifacts folder) gives the baseline: that run's `none x none` graph, fp32 ONNX.
   Without a registered champion the demo sweep runs first (`slimline run SPEC`).
2. Both are deployed side by side in one Serve instance on 127.0.0.1 (`/baseline`, `/champion`),
   one replica each, with the same batching settings (`--max-batch-size`, `--batch-wait-ms`).
3. Load: a bounded asyncio httpx client sends `--requests` POST /embed requests (k real corpus
   sentences each, for k in `--texts-per-request`), `c` at a time, for c in `--concurrency`;
   every round visits baseline and champion alternately, and medians over `--rounds` are
   reported. The same load on GET /healthz (no model work) measures what HTTP and Serve alone
   cost a request. Client, proxy and replicas share this machine's cores, as on one box.
4. Where the time goes, measured in this process without HTTP: the same sentences through the
   same Predictor at batch 1 and at `--max-batch-size` (ORT + tokenisation), and tokenisation
   alone. The champion/baseline ratios there say how much of the sweep's speed-up batching and
   short sentences leave; the served ratio adds HTTP and Serve's queueing on top.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from slimline.cluster.serve import ServeSource, deploy, serve_instance
from slimline.pipelines.spec.serve import ServeConfig
from slimline.pipelines.spec.spec import load_spec
from slimline.registry.browse import Browser, Ref
from slimline.registry.lineage import metrics_of
from slimline.registry.store import resolve_uri
from slimline.tasks.cpu_probe import cpu_flags, cpu_model
from slimline.tasks.serving import Predictor
from slimline.tasks.text import builtin_corpus

from slimline.adapters import registry_source
from slimline.cli.common import stdout_to_stderr

ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni")
DEADLINE_S = 120  # per load level and model: the loop is bounded in time as well as in count


def _champion(args: argparse.Namespace, uri: str) -> Any:
    """The registered version NAME@alias, running the demo sweep first when there is none."""
    browser = Browser(uri)
    try:
        return browser.version(Ref(args.model, alias=args.alias))
    except Exception:  # no model or no alias yet: make one
        exe = Path(sys.executable).with_name("slimline")
        print(f"no {args.model}@{args.alias} in {uri}: running {args.spec} first", file=sys.stderr)
        subprocess.run([str(exe), "run", args.spec], check=True, stdout=subprocess.DEVNULL)
        return browser.version(Ref(args.model, alias=args.alias))


def _baseline_folder(artifacts: Path, run_id: str) -> tuple[Path, dict[str, Any]]:
    manifest = json.loads((artifacts / run_id / "manifest.json").read_text())
    for row in manifest["variants"]:
        if row.get("pruning") is None and row.get("quantization") is None and row.get("onnx"):
            return Path(row["onnx"]).parent, manifest
    raise SystemExit(f"{artifacts / run_id}: no fp32 (none x none) graph in the manifest")


async def _load(url: str, texts: list[str], requests: int, concurrency: int, per: int = 1) -> dict[str, Any]:
    """`requests` POSTs of `per` texts each (a GET when `per` is 0), `concurrency` in flight:
    throughput, latency percentiles of the successful ones, and the errors."""
    latencies: list[float] = []
    errors: list[str] = []
    todo = iter(range(requests))
    deadline = time.monotonic() + DEADLINE_S

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
    return {
        "rps": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": len(errors),
    }


def _direct(folders: dict[str, Path], texts: list[str], batch: int, rounds: int) -> dict[str, Any]:
    """Texts/s of each graph's Predictor without HTTP (batch 1 and `batch`; ORT threads spinning
    between calls or not), and tokenisation alone."""
    out: dict[str, Any] = {}
    for spin in (True, False):
        preds = {k: Predictor(f, threads=os.cpu_count(), spinning=spin) for k, f in folders.items()}
        for b in (1, batch):
            times: dict[str, list[float]] = {k: [] for k in preds}
            for _ in range(rounds):
                for k, p in preds.items():
                    t0 = time.perf_counter()
                    p.predict(texts, batch_size=b)
                    times[k].append(time.perf_counter() - t0)
            key = f"b{b}, {'spinning' if spin else 'not spinning'}"
            out[key] = {k: len(texts) / statistics.median(v) for k, v in times.items()}
    tok = preds["baseline"].tokenizer
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        tok(texts[i : i + batch], padding=True, truncation=True, max_length=128, return_tensors="np")
    out["tokenize_ms_per_text"] = (time.perf_counter() - t0) * 1000 / len(texts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="pipelines/examples/minilm-cpu.yaml")
    ap.add_argument("--model", default="minilm-compressed")
    ap.add_argument("--alias", default="champion")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--texts-per-request", default="1,8")
    ap.add_argument("--spinning", action="store_true", help="ORT threads of the replicas busy-wait")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    spec = load_spec(args.spec)
    uri = resolve_uri(args.tracking_uri, spec.registry.tracking_uri)
    mv = _champion(args, uri)
    champ = registry_source(uri, f"{args.model}/{mv.version}", Path(spec.artifacts.path) / "serve-cache")
    base_folder, manifest = _baseline_folder(Path(spec.artifacts.path), dict(mv.tags)["slimline.run_id"])
    sweep = metrics_of(dict(mv.tags))
    texts = builtin_corpus()[:200]
    levels = [int(c) for c in args.concurrency.split(",")]
    threads = os.cpu_count() or 1
    cfg = ServeConfig(
        port=args.port,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        threads=threads,
        spinning=args.spinning,
    )
    pers = [int(k) for k in args.texts_per_request.split(",")]
    results: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    t_start = time.perf_counter()
    # Ray prints its worker notices to stdout; --json promises one document there.
    with stdout_to_stderr(args.json), serve_instance(cfg):
        deploy(
            ServeSource(str(base_folder), variant="baseline"),
            cfg,
            app_name="baseline",
            route_prefix="/baseline",
        )
        deploy(champ, cfg, app_name="champion", route_prefix="/champion")
        base = f"http://127.0.0.1:{args.port}"
        for name in ("baseline", "champion"):  # warm both: first requests pay for lazy initialisation
            asyncio.run(_load(f"{base}/{name}/embed", texts, 20, 4))
        for per, c, r in itertools.product(pers, levels, range(args.rounds)):
            order = ["baseline", "champion"] if r % 2 == 0 else ["champion", "baseline"]
            for name in order:
                got = asyncio.run(_load(f"{base}/{name}/embed", texts, args.requests, c, per))
                results.setdefault((name, per, c), []).append(got)
            if per == pers[0]:  # no model at all: what HTTP and Serve cost a request here
                got = asyncio.run(_load(f"{base}/baseline/healthz", texts, args.requests, c, 0))
                results.setdefault(("healthz (no model)", 0, c), []).append(got)
    direct = _direct(
        {"baseline": base_folder, "champion": Path(champ.folder or "")}, texts, args.max_batch_size, 3
    )
    rows = []
    for (name, per, c), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p95_ms", "p99_ms")}
        errors = sum(r["errors"] for r in runs)
        rows.append(
            {
                "model": name,
                "texts_per_request": per,
                "concurrency": c,
                **med,
                "texts_per_s": med["rps"] * per,
                "errors": errors,
                "requests": args.requests * len(runs),
            }
        )
    ratios = {}
    for per, c in itertools.product(pers, levels):
        pairs = zip(results["champion", per, c], results["baseline", per, c], strict=True)
        ratios[f"{per} text(s)/request, c={c}"] = statistics.median(ch["rps"] / b["rps"] for ch, b in pairs)
    flags = set(cpu_flags().split())
    out = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "isa": {f: f in flags for f in ISA},
        "champion": {
            "name": mv.name,
            "version": str(mv.version),
            "variant": dict(mv.tags).get("slimline.variant_id"),
            "label": dict(mv.tags).get("slimline.label"),
        },
        "run_id": manifest["run_id"],
        "sweep_speedup_vs_baseline": sweep.get("speedup_vs_baseline"),
        "sweep_latency_setting": spec.evaluate.latency.model_dump(include={"batch_size", "sequence_length"}),
        "served_ratio": ratios,
        "direct_ratio": {k: v["champion"] / v["baseline"] for k, v in direct.items() if isinstance(v, dict)},
        "direct_texts_per_s": {k: v for k, v in direct.items() if isinstance(v, dict)},
        "tokenize_ms_per_text": direct["tokenize_ms_per_text"],
        "rows": rows,
        "wall_s": time.perf_counter() - t_start,
        "settings": {
            "requests": args.requests,
            "rounds": args.rounds,
            "max_batch_size": args.max_batch_size,
            "batch_wait_ms": args.batch_wait_ms,
            "threads": threads,
            "texts_per_request": pers,
            "spinning": args.spinning,
        },
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    _table(out)


def _table(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    isa = ", ".join(k for k, v in out["isa"].items() if v) or "no AVX2"
    t = Table(title=f"Ray Serve on {out['cpu']} ({out['cores']} cores; {isa}): {out['champion']['label']}")
    for col in (
        "model",
        "texts/request",
        "concurrency",
        "requests/s",
        "texts/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
    ):
        t.add_column(col)
    for r in out["rows"]:
        t.add_row(
            r["model"],
            str(r["texts_per_request"] or "-"),
            str(r["concurrency"]),
            f"{r['rps']:.1f}",
            f"{r['texts_per_s']:.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            str(r["errors"]),
        )
    console = Console()
    console.print(t)
    served = "; ".join(f"{k}: {v:.2f}x" for k, v in out["served_ratio"].items())
    direct = ", ".join(f"{k}: {v:.2f}x" for k, v in out["direct_ratio"].items())
    console.print(f"champion/baseline throughput served: {served}")
    sweep, at = out["sweep_speedup_vs_baseline"], out["sweep_latency_setting"]
    console.print(f"  same graphs in-process, no HTTP ({direct}); sweep: {sweep:.2f}x at {at}")
    console.print(f"  tokenisation: {out['tokenize_ms_per_text']:.2f} ms per text")


if __name__ == "__main__":
    main()
