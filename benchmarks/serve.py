"""Serving benchmark: the fp32 baseline and the registered champion on Ray Serve, under load.

    python benchmarks/serve.py [--json] [--model minilm-compressed] [--alias champion]
                               [--spec pipelines/examples/minilm-cpu.yaml] [--requests 300]
                               [--concurrency 1,8,32] [--texts-per-request 1,8] [--rounds 3]
                               [--threads 1] [--ingress proxy,haproxy] [--tracking-uri URI]

1. The champion is NAME@alias in the registry (the spec's store). Its run's manifest (under the
   spec's artifacts folder) gives the baseline: that run's `none x none` graph, fp32 ONNX.
   Without a registered champion the demo sweep runs first (`slimline run SPEC`).
2. Both are deployed side by side in one Serve instance on 127.0.0.1 (`/baseline`, `/champion`),
   one replica each, `--threads` ORT threads each, the same batching (adaptive unless
   `--batch-wait-ms`), once per ingress in `--ingress` (Serve's proxy; Ray's HAProxy mode).
   Beside them runs the floor an engineer would write by hand for the champion
   (benchmarks/serve_floor.py: one uvicorn process, one ORT session, the same batcher).
3. Load: a bounded asyncio httpx client (cluster.load) sends `--requests` POST /embed requests
   (k real corpus sentences each, for k in `--texts-per-request`), `c` at a time, for c in
   `--concurrency`; every round visits the servers in alternating order, and medians over
   `--rounds` are reported. The same load on GET /healthz (no model work) measures what HTTP and
   Serve alone cost a request. Client, proxy and replicas share this machine's cores.
4. In this process without HTTP: the same sentences through the same Predictor (same threads) at
   batch 1 and at `--max-batch-size`, and tokenisation alone.
5. Goals, per ingress: served champion texts/s at 1 text per request over its in-process batch-1
   texts/s (>= 0.7 wanted at 8+ clients); served champion/baseline over the in-process ratio
   (>= 0.85); p50 at 1 client minus the in-process time per text (<= 2 ms).
"""

from __future__ import annotations

import argparse
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

from slimline.adapters import registry_source
from slimline.cli.common import stdout_to_stderr
from slimline.cluster.load import run_load
from slimline.cluster.serve import ServeSource, deploy, serve_instance
from slimline.pipelines.spec.serve import ServeConfig
from slimline.pipelines.spec.spec import load_spec
from slimline.registry.browse import Browser, Ref
from slimline.registry.lineage import metrics_of
from slimline.registry.store import resolve_uri
from slimline.tasks.cpu_probe import cpu_flags, cpu_model
from slimline.tasks.serving import Predictor
from slimline.tasks.text import builtin_corpus

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


def _direct(
    folders: dict[str, Path], texts: list[str], batch: int, rounds: int, threads: int
) -> dict[str, Any]:
    """Texts/s of each graph's Predictor without HTTP (batch 1 and `batch`; ORT threads spinning
    between calls or not), and tokenisation alone."""
    out: dict[str, Any] = {}
    for spin in (True, False):
        preds = {k: Predictor(f, threads=threads, spinning=spin) for k, f in folders.items()}
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


def _floor(folder: Path, port: int, threads: int, batch: int) -> subprocess.Popen[bytes]:
    """The hand-written server (benchmarks/serve_floor.py) on `port`, once it answers /healthz."""
    script = Path(__file__).with_name("serve_floor.py")
    cmd = [sys.executable, str(script), str(folder), "--port", str(port), "--threads", str(threads)]
    proc = subprocess.Popen([*cmd, "--max-batch-size", str(batch)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"the hand-written server on port {port} did not come up")


def _measure(
    args: argparse.Namespace, ingress: str, folders: dict[str, Any], texts: list[str], threads: int
) -> dict[tuple[str, int, int], list[dict[str, Any]]]:
    """Every load level on Serve (baseline, champion, /healthz) and on the floor, rounds interleaved."""
    cfg = ServeConfig(
        port=args.port,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        threads=threads,
        spinning=args.spinning,
        ingress=ingress,
    )
    levels = [int(c) for c in args.concurrency.split(",")]
    pers = [int(k) for k in args.texts_per_request.split(",")]
    results: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    floor = _floor(Path(folders["champion"].folder or ""), args.port + 1, threads, args.max_batch_size)
    try:
        # Ray prints its worker notices to stdout; --json promises one document there.
        with stdout_to_stderr(args.json), serve_instance(cfg):
            base_src = ServeSource(str(folders["baseline"]), variant="baseline")
            deploy(base_src, cfg, app_name="baseline", route_prefix="/baseline")
            deploy(folders["champion"], cfg, app_name="champion", route_prefix="/champion")
            serve = f"http://127.0.0.1:{args.port}"
            urls = {
                "baseline": f"{serve}/baseline/embed",
                "champion": f"{serve}/champion/embed",
                "champion, hand-written floor": f"http://127.0.0.1:{args.port + 1}/embed",
            }
            for url in urls.values():  # warm: first requests pay for lazy initialisation
                run_load(url, texts, 20, 4)
            for per, c, r in itertools.product(pers, levels, range(args.rounds)):
                names = list(urls) if r % 2 == 0 else list(urls)[::-1]
                for name in names:
                    got = run_load(urls[name], texts, args.requests, c, per, DEADLINE_S)
                    results.setdefault((f"{name} [{ingress}]", per, c), []).append(got)
                if per == pers[0]:  # no model at all: what HTTP and Serve cost a request here
                    got = run_load(f"{serve}/baseline/healthz", texts, args.requests, c, 0, DEADLINE_S)
                    results.setdefault((f"healthz (no model) [{ingress}]", 0, c), []).append(got)
    finally:
        floor.terminate()
        floor.wait(30)
    return results


def _goals(out: dict[str, Any], ingress: str) -> dict[str, Any]:
    """The issue's three goals for one ingress, from the medians: served/in-process texts/s at 1
    text per request (8 and more clients), served ratio over in-process ratio, p50 at 1 client."""
    rows = {(r["model"], r["texts_per_request"], r["concurrency"]): r for r in out["rows"]}
    direct = out["direct_texts_per_s"]["b1, not spinning"]
    in_ratio = direct["champion"] / direct["baseline"]
    in_ms = 1000 / direct["champion"]
    goals: dict[str, Any] = {}
    for (model, per, c), r in rows.items():
        if model != f"champion [{ingress}]":
            continue
        base = rows[(f"baseline [{ingress}]", per, c)]
        goals[f"{per} text(s)/request, c={c}"] = {
            "served_over_in_process": r["texts_per_s"] / (direct["champion"]) if per == 1 else None,
            "ratio_over_in_process_ratio": (r["rps"] / base["rps"]) / in_ratio,
            "p50_minus_in_process_ms": r["p50_ms"] - in_ms * per if c == 1 else None,
        }
    return goals


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
    ap.add_argument("--batch-wait-ms", type=float, default=0.0)
    ap.add_argument("--texts-per-request", default="1,8")
    ap.add_argument("--threads", type=int, default=1, help="ORT threads per replica, and in process")
    ap.add_argument("--ingress", default="proxy,haproxy", help="Serve ingresses to measure, in turn")
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
    pers = [int(k) for k in args.texts_per_request.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    ingresses = args.ingress.split(",")
    results: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    t_start = time.perf_counter()
    for ingress in ingresses:
        folders = {"baseline": base_folder, "champion": champ}
        results.update(_measure(args, ingress, folders, texts, args.threads))
    direct = _direct(
        {"baseline": base_folder, "champion": Path(champ.folder or "")},
        texts,
        args.max_batch_size,
        3,
        args.threads,
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
    for ingress, per, c in itertools.product(ingresses, pers, levels):
        pairs = zip(
            results[f"champion [{ingress}]", per, c], results[f"baseline [{ingress}]", per, c], strict=True
        )
        ratios[f"{ingress}: {per} text(s)/request, c={c}"] = statistics.median(
            ch["rps"] / b["rps"] for ch, b in pairs
        )
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
            "threads": args.threads,
            "texts_per_request": pers,
            "spinning": args.spinning,
            "ingress": ingresses,
        },
    }
    out["goals"] = {ingress: _goals(out, ingress) for ingress in ingresses}
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
    for ingress, goals in out["goals"].items():
        for load, g in goals.items():
            parts = [f"ratio/in-process ratio {g['ratio_over_in_process_ratio']:.2f} (goal >= 0.85)"]
            if g["served_over_in_process"] is not None:
                parts.insert(0, f"served/in-process {g['served_over_in_process']:.2f} (goal >= 0.7 at c>=8)")
            if g["p50_minus_in_process_ms"] is not None:
                parts.append(f"p50 - in-process {g['p50_minus_in_process_ms']:+.1f} ms (goal <= 2)")
            console.print(f"  goals [{ingress}] {load}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
