"""Generation benchmark: tokens/s per client and time to first token, in process, in PyTorch, served.

    python benchmarks/generate.py [--json] [--graph FOLDER] [--torch-model SOURCE]
                                  [--spec pipelines/examples/smollm2-cpu.yaml] [--model smollm2-compressed]
                                  [--alias champion] [--tracking-uri URI] [--clients 1,4]
                                  [--new-tokens 64] [--requests 4] [--rounds 2] [--no-serve]

1. The graph is the SmolLM2 example's champion (NAME@alias in the spec's registry, pulled like
   `slimline serve` does), or `--graph` (a decoding-graph folder). The PyTorch reference is the
   spec's fp32 source model (`--torch-model` overrides; none with `--graph` alone: no torch row).
2. In process: `tasks.generation` with c clients = c prompts decoded in one right-padded batch,
   what the replica's loop does; EOS is ignored so every request decodes `--new-tokens`.
   PyTorch fp32: `generate(do_sample=False)` of the same c prompts (left-padded, its KV cache),
   `min_new_tokens` = `max_new_tokens`; its time to first token is a 1-token `generate`.
3. Served: the graph on Ray Serve (127.0.0.1), c clients each sending `--requests` POST /generate
   with `"stream": true` (httpx, async); time to first token is the first text event. Skipped,
   and said so, when the replica has no /generate route.
Per client: tokens/s = completion tokens / (request end - request start); ttft in ms. Medians
over `--rounds`. The CPU's instruction sets are quoted (tasks.cpu_probe).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from slimline.cli.common import stdout_to_stderr
from slimline.tasks.cpu_probe import cpu_flags, cpu_model
from slimline.tasks.generation import Batch, Generator, Params
from slimline.tasks.serving import Predictor
from slimline.tasks.text import builtin_corpus

DEADLINE_S = 300  # per served load level


def _prompts(n: int) -> list[str]:
    corpus = [t for t in builtin_corpus() if len(t.split()) >= 12]
    return [corpus[i % len(corpus)] for i in range(n)]


def _champion(args: argparse.Namespace) -> tuple[Path, str | None, str]:
    """(graph folder, torch source, label): the registered champion, or --graph."""
    if args.graph:
        return Path(args.graph), args.torch_model, str(args.graph)
    from slimline.adapters import registry_source
    from slimline.pipelines.spec.spec import load_spec
    from slimline.registry.browse import Browser, Ref
    from slimline.registry.store import resolve_uri

    spec = load_spec(args.spec)
    uri = resolve_uri(args.tracking_uri, spec.registry.tracking_uri)
    try:
        mv = Browser(uri).version(Ref(args.model, alias=args.alias))
    except Exception as exc:
        raise SystemExit(
            f"no {args.model}@{args.alias} in {uri} ({type(exc).__name__}): run `slimline run {args.spec}` "
            "first (about 15 minutes on 2 cores), or give --graph FOLDER"
        ) from None
    source = registry_source(uri, f"{args.model}/{mv.version}", Path(spec.artifacts.path) / "serve-cache")
    folder = Path(source.local_folder())
    label = f"{args.model} v{mv.version} ({dict(mv.tags).get('slimline.label', '?')})"
    return folder, args.torch_model or spec.model.source, label


def _in_process(folder: Path, clients: int, new: int, rounds: int) -> dict[str, float]:
    gen = Generator.from_predictor(Predictor(folder, threads=os.cpu_count()), folder)
    gen.eos_token_ids = frozenset()  # every request decodes `new` tokens
    rates, ttfts = [], []
    for _ in range(rounds + 1):  # the first round warms the session up
        seqs = [gen.start(p, params=Params(max_new_tokens=new)) for p in _prompts(clients)]
        batch = Batch(gen)
        t0 = time.perf_counter()
        batch.add(seqs)
        first = time.perf_counter() - t0
        while batch:
            batch.step()
        wall = time.perf_counter() - t0
        rates.append(statistics.median(len(s.token_ids) / wall for s in seqs))
        ttfts.append(first * 1000)
    return {"tokens_per_s": statistics.median(rates[1:]), "ttft_ms": statistics.median(ttfts[1:])}


def _torch(source: str, clients: int, new: int, rounds: int) -> dict[str, float]:
    import torch

    from slimline.tasks.load import load_pretrained, load_tokenizer, resolve_source

    torch.set_num_threads(os.cpu_count() or 1)
    path = resolve_source(source)
    model, tok = load_pretrained(path, "causal-lm"), load_tokenizer(path)
    tok.padding_side = "left"  # transformers' batched generation pads prompts on the left
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    enc = tok(_prompts(clients), return_tensors="pt", padding=True)
    feed = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def run(n: int) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(
                **feed, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id
            )
        return time.perf_counter() - t0

    run(2)  # warm-up
    walls = [run(new) for _ in range(rounds)]
    firsts = [run(1) for _ in range(rounds)]
    return {"tokens_per_s": new / statistics.median(walls), "ttft_ms": 1000 * statistics.median(firsts)}


async def _client_load(url: str, clients: int, requests: int, new: int) -> dict[str, Any]:
    rates: list[float] = []
    ttfts: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + DEADLINE_S

    async def one(client: httpx.AsyncClient, prompt: str) -> None:
        body = {"prompt": prompt, "max_new_tokens": new, "stream": True}
        t0 = time.perf_counter()
        first, tokens = None, 0
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                errors.append(str(r.status_code))
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "text" in event and first is None:
                    first = time.perf_counter() - t0
                tokens = event.get("completion_tokens", tokens)
                if "error" in event:
                    errors.append(event["error"])
        wall = time.perf_counter() - t0
        rates.append(tokens / wall)
        ttfts.append(1000 * (first if first is not None else wall))

    async def worker(client: httpx.AsyncClient, k: int) -> None:
        for i in range(requests):
            if time.monotonic() > deadline:
                errors.append("deadline")
                return
            try:
                await one(client, _prompts(clients * requests)[k * requests + i])
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client, k) for k in range(clients)))
    nan = float("nan")
    return {
        "tokens_per_s": statistics.median(rates) if rates else nan,
        "ttft_ms": statistics.median(ttfts) if ttfts else nan,
        "ttft_p95_ms": float(np.percentile(ttfts, 95)) if ttfts else nan,
        "errors": len(errors),
    }


def _served(folder: Path, levels: list[int], args: argparse.Namespace) -> dict[int, dict[str, Any]] | str:
    from slimline.cluster.serve import ServeSource, deploy, serve_instance
    from slimline.pipelines.spec.serve import ServeConfig

    cfg = ServeConfig(port=args.port, threads=os.cpu_count(), max_batch_size=max(levels))
    out: dict[int, dict[str, Any]] = {}
    with stdout_to_stderr(args.json), serve_instance(cfg):
        deploy(ServeSource(str(folder), variant="champion"), cfg, app_name="generate", route_prefix="/")
        url = f"http://127.0.0.1:{args.port}/generate"
        probe = httpx.post(url, json={"prompt": "Hello", "max_new_tokens": 2}, timeout=120)
        if probe.status_code in (404, 405):
            return f"not measured: the replica has no POST /generate route ({probe.status_code})"
        for c in levels:
            runs = [
                asyncio.run(_client_load(url, c, args.requests, args.new_tokens)) for _ in range(args.rounds)
            ]
            out[c] = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "errors"}
            out[c]["errors"] = sum(r["errors"] for r in runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", default=None, help="a decoding-graph folder (else the registered champion)")
    ap.add_argument("--torch-model", default=None, help="the fp32 source for the PyTorch row")
    ap.add_argument("--spec", default="pipelines/examples/smollm2-cpu.yaml")
    ap.add_argument("--model", default="smollm2-compressed")
    ap.add_argument("--alias", default="champion")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--clients", default="1,4")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=4, help="served requests per client per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--port", type=int, default=8766)
    ap.add_argument("--no-serve", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    folder, torch_source, label = _champion(args)
    levels = [int(c) for c in args.clients.split(",")]
    rows: list[dict[str, Any]] = []
    for c in levels:
        rows.append(
            {
                "engine": "ONNX Runtime, in process",
                "clients": c,
                **_in_process(folder, c, args.new_tokens, args.rounds),
            }
        )
        if torch_source:
            rows.append(
                {
                    "engine": "PyTorch fp32 generate",
                    "clients": c,
                    **_torch(torch_source, c, args.new_tokens, args.rounds),
                }
            )
    served = "not measured: --no-serve" if args.no_serve else _served(folder, levels, args)
    if isinstance(served, dict):
        rows += [
            {"engine": "Ray Serve, POST /generate (stream)", "clients": c, **r} for c, r in served.items()
        ]
    out = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "graph": label,
        "folder": str(folder),
        "torch_model": torch_source,
        "new_tokens": args.new_tokens,
        "rows": rows,
        "served": served if isinstance(served, str) else "measured",
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Generation on {out['cpu']} ({out['cores']} cores; {out['cpu_flags']}): {label}")
    for col in ("engine", "clients", "tokens/s per client", "ttft ms", "errors"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["engine"],
            str(r["clients"]),
            f"{r['tokens_per_s']:.1f}",
            f"{r['ttft_ms']:.1f}",
            str(r.get("errors", "-")),
        )
    Console().print(t)
    if isinstance(served, str):
        Console().print(f"served: {served}")


if __name__ == "__main__":
    main()
