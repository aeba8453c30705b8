"""LLM benchmark: SmolLM2-135M decoding on CPU, PyTorch fp32 against the sweep's ORT graphs.

    python benchmarks/llm.py [--json] [--spec pipelines/examples/smollm2-cpu.yaml] [--manifest PATH]
                             [--rounds 5] [--threads N]

1. Unless --manifest is given, runs the example sweep (`slimline run SPEC`, the installed CLI;
   cached stages make a rerun cheap) and reads the newest manifest of that spec. Quality
   (perplexity, KL, top-1 and generation agreement) is the sweep's, measured against the ORT
   fp32 decoding graph, whose match with PyTorch the sweep's reference stage records.
2. Rows: PyTorch fp32 (the load stage's model: the GGUF de-quantized to fp32, transformers with
   its KV cache), ORT fp32 (the baseline), the best unpruned ORT int8 (weight-only or dynamic),
   the best unpruned ORT int4 and the best depth-pruned (+ KD) int4; best = highest top-1
   agreement, then decode speed. When the best int4 is not plain rounding (`algorithm: rtn`),
   the best rtn int4 is timed beside it ("ORT int4 rtn"). A row the sweep has no variant for is
   left out and said so.
3. Timing, side by side in one process: `--rounds` rounds each visit every row in rotated order;
   decode = 64 greedy tokens after an untimed 32-token prompt, at batch 1 and 8 (tok/s = batch x
   64 / seconds); prefill = one forward pass of batch 1 x 128. Medians, with [min, max].
4. Memory bandwidth: numpy copies a 512 MiB float32 array 5 times; bandwidth = 2 x bytes / median
   time (each byte is read once and written once). At batch 1 a decode step reads every weight
   once, so graph bytes x tok/s is the traffic a row needs: its share of the measured bandwidth
   says how close it is to the memory-bound limit (roughly: a one-thread copy is no exact ceiling
   for multi-threaded reads, so shares over 100% can happen).
5. Goal: an int4 row decodes (batch 1) >= 3x faster than PyTorch fp32 with top-1 >= 0.90 and
   generation agreement >= 0.80.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime
import torch

from slimline.pipelines.run.records import DONE
from slimline.pipelines.spec.spec import load_spec
from slimline.tasks import decode
from slimline.tasks.cpu_probe import cpu_flags, cpu_model
from slimline.tasks.graph import read_meta, tokenizer_of
from slimline.tasks.load import load_pretrained, load_tokenizer
from slimline.tasks.runtime import quiet_libraries, session
from slimline.tasks.text import builtin_corpus

TOKENS, PROMPT, PREFILL = 64, 32, 128
BATCHES = (1, 8)
TEACHER = "PyTorch fp32"
INT4_ROWS = ("ORT int4", "ORT int4 rtn", "depth+KD+int4")
GOAL_SPEEDUP, GOAL_TOP1, GOAL_GEN = 3.0, 0.90, 0.80
ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni")
COPY_MIB, COPY_REPEATS = 512, 5
NOISY = 1.25  # max/min of a row's decode rates above which the result says the timing was disturbed
QUALITY = ("perplexity", "kl_divergence", "top1_agreement", "generation_agreement")


# --- the sweep and its manifest -------------------------------------------------------------------


def run_sweep(spec_path: Path) -> Path:
    """Run the sweep with the installed CLI and return the manifest it wrote."""
    spec = load_spec(spec_path)
    exe = Path(sys.executable).with_name("slimline")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "slimline"]
    started = time.time()
    # The CLI's table goes to stderr, so that with --json stdout stays one JSON document.
    rc = subprocess.run([*cmd, "run", str(spec_path)], stdout=sys.stderr, check=False).returncode
    root = Path(spec.artifacts.path)  # relative paths are the CLI's cwd, which is ours
    ours = [p for p in root.glob(f"{spec.name}-*/manifest.json") if p.stat().st_mtime >= started]
    # A spec whose name extends this one's would match the glob too: its hash tells them apart.
    ours = [p for p in ours if json.loads(p.read_text()).get("spec_hash") == spec.digest()]
    if not ours:
        raise SystemExit(f"`slimline run {spec_path}` (exit {rc}) wrote no manifest under {root}")
    if rc:
        # The CLI also exits 1 when the registry gate refuses a model: the measurements still stand.
        print(f"note: slimline run exited {rc}; benchmarking its manifest anyway", file=sys.stderr)
    return max(ours, key=lambda p: p.stat().st_mtime)


def stages_root(manifest_path: Path, manifest: dict[str, Any]) -> Path:
    """<artifacts>/stages: beside the run folder, or wherever the graphs' stage folders are.

    The manifest records no stage root; every graph path is <stages>/<stage id>/model.onnx, which
    still holds when a manifest was copied away from its artifacts.
    """
    candidates = [manifest_path.resolve().parent.parent / "stages"]
    candidates += [Path(v["onnx"]).parents[1] for v in manifest["variants"] if v.get("onnx")]
    for c in candidates:
        if c.is_dir():
            return c
    raise SystemExit(f"{manifest_path}: no stages folder found (tried {', '.join(map(str, candidates))})")


def stage_record(root: Path, stage_id: str) -> dict[str, Any]:
    """A stage's record (<stages>/<id>.json), or {} when it is gone (e.g. garbage-collected)."""
    path = root / f"{stage_id}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _method(v: dict[str, Any], axis: str) -> str | None:
    return (v.get(axis) or {}).get("method")


def _depth_pruned(v: dict[str, Any]) -> bool:
    """Whole layers removed: the `layers` method, or a structured cut that also drops layers."""
    p = v.get("pruning") or {}
    return p.get("method") == "layers" or (p.get("method") == "structured" and bool(p.get("layers")))


def _int4_algorithm(v: dict[str, Any]) -> str | None:
    q = v.get("quantization") or {}
    return q.get("algorithm", "rtn") if q.get("method") == "int4-weight-only" else None


def _best(cands: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Highest top-1 agreement; a tie goes to the faster decoder."""

    def key(v: dict[str, Any]) -> tuple[float, float]:
        m = v["metrics"]
        return (m.get("top1_agreement") or 0.0, m.get("decode_tokens_per_s") or 0.0)

    return max(cands, key=key) if cands else None


def pick_rows(manifest: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The ORT rows (name -> manifest variant) and, for each row left out, why."""
    done = [v for v in manifest["variants"] if v["status"] in DONE and v.get("onnx")]
    unpruned = [v for v in done if _method(v, "pruning") is None]
    base_id = (manifest.get("baseline") or {}).get("variant")
    base = next((v for v in done if v["id"] == base_id), None) or _best(
        [v for v in unpruned if _method(v, "quantization") is None]
    )
    if base is None:
        raise SystemExit("the manifest has no finished baseline (no pruning, no quantization)")
    int8 = ("dynamic-int8", "int8-weight-only")
    depth = [v for v in done if _depth_pruned(v) and _method(v, "quantization") == "int4-weight-only"]
    # The row is the distilled (KD) one; an undistilled depth cut only stands in when there is none.
    distilled = [v for v in depth if v.get("distillation")]  # a row's KD is null when none ran
    wanted: dict[str, tuple[dict[str, Any] | None, str]] = {
        "ORT fp32": (base, ""),
        "ORT int8": (
            _best([v for v in unpruned if _method(v, "quantization") in int8]),
            "no finished unpruned int8 (dynamic or weight-only) variant",
        ),
        "ORT int4": (
            _best([v for v in unpruned if _method(v, "quantization") == "int4-weight-only"]),
            "no finished unpruned int4-weight-only variant",
        ),
        "depth+KD+int4": (
            _best(distilled or depth),
            "no finished depth-pruned int4 variant (the sweep pruned no layers, or they failed)",
        ),
    }
    # Plain rounding beside the best, when the best is another algorithm (affine, hqq): what
    # the choice of algorithm is worth, timed in the same rounds.
    rtn = _best([v for v in unpruned if _int4_algorithm(v) == "rtn"])
    if rtn is not None and rtn is not wanted["ORT int4"][0]:
        wanted["ORT int4 rtn"] = (rtn, "")
    rows = {name: v for name, (v, _) in wanted.items() if v is not None}
    omitted = {name: why for name, (v, why) in wanted.items() if v is None}
    return rows, omitted


# --- what a graph reads per token -------------------------------------------------------------------


def gathered_only_bytes(path: Path) -> int:
    """Bytes of weights a decode step does not stream: tables only gathered from (embeddings).

    Gather reads one row per token, so such a table counts in the graph's size but hardly in
    its traffic. An int4 graph of a tied-embedding model keeps the table in fp32 for its Gather
    (through a Transpose that ORT folds at load), so its size overstates what a token reads.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    users: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for i, name in enumerate(node.input):
            users[name].append((node, i))

    def gathered(name: str) -> bool:
        uses = users.get(name, [])
        return bool(uses) and all(
            (n.op_type == "Gather" and i == 0) or (n.op_type == "Transpose" and all(map(gathered, n.output)))
            for n, i in uses
        )

    total = 0
    for init in graph.initializer:
        if gathered(init.name):
            item = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
            total += int(np.prod(init.dims, dtype=np.int64)) * item
    return total


def copy_bandwidth_gbs() -> float:
    """GB/s of a plain memory copy: np.copyto of a 512 MiB float32 array, median of 5.

    Counted as 2 x bytes (every byte read once and written once). numpy copies on one thread,
    so this is what one core draws; all cores together may draw more on a big server.
    """
    src = np.ones(COPY_MIB * 2**20 // 4, np.float32)
    dst = np.zeros_like(src)
    np.copyto(dst, src)  # untimed: the first copy also faults the destination's pages in
    times = []
    for _ in range(COPY_REPEATS):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    return 2 * src.nbytes / statistics.median(times) / 1e9


# --- timing -----------------------------------------------------------------------------------------


class Runner(Protocol):
    def decode_s(self, batch: int) -> float: ...

    def prefill_s(self) -> float: ...


class OrtRunner:
    """An ORT decoding graph: decode loops and prefill with the sweep's own decoder."""

    def __init__(self, path: Path, texts: list[str], threads: int) -> None:
        meta = read_meta(path)
        if not meta.get("kv_cache"):
            raise SystemExit(f"{path}: not a decoding graph (no KV cache in meta.json)")
        self.decoder = decode.OrtDecoder(session(path, threads=threads), meta)
        tok = tokenizer_of(path)
        # Equal-length real text: no padding, so batch 8 does 8x the work of batch 1.
        self.prompts = {b: decode.prompt_ids(tok, texts, b, PROMPT) for b in BATCHES}
        self.prefill_ids = decode.prompt_ids(tok, texts, 1, PREFILL)

    def decode_s(self, batch: int) -> float:
        return self.decoder.timed_decode(self.prompts[batch], TOKENS)

    def prefill_s(self) -> float:
        start = time.perf_counter()
        self.decoder.prefill(self.prefill_ids)  # logits and the new KV cache, as PyTorch returns
        return time.perf_counter() - start


class TorchRunner:
    """The fp32 model in transformers (eager attention, its KV cache): what a user starts from."""

    def __init__(self, folder: Path, texts: list[str]) -> None:
        self.model = load_pretrained(str(folder), "causal-lm")
        tok = load_tokenizer(str(folder))
        self.prompts = {b: decode.prompt_ids(tok, texts, b, PROMPT) for b in BATCHES}
        self.prefill_ids = torch.from_numpy(decode.prompt_ids(tok, texts, 1, PREFILL))

    def decode_s(self, batch: int) -> float:
        return decode.torch_timed_decode(self.model, self.prompts[batch], TOKENS)

    def prefill_s(self) -> float:
        with torch.no_grad():
            start = time.perf_counter()
            self.model(input_ids=self.prefill_ids, attention_mask=torch.ones_like(self.prefill_ids))
            return time.perf_counter() - start

    def weight_bytes(self) -> int:
        # parameters() yields a tied embedding / LM head once, as it is stored once.
        return sum(p.numel() * p.element_size() for p in self.model.parameters())


def measure(runners: dict[str, Runner], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Per row: decode tok/s at each batch and prefill ms, one sample per round.

    Rounds visit the rows in rotated order, so a slow spell of a shared machine lands on every
    row alike rather than on whichever came last.
    """
    for r in runners.values():  # untimed: first calls allocate buffers and prepack weights
        for b in BATCHES:
            r.decode_s(b)
        r.prefill_s()
    out: dict[str, dict[str, list[float]]] = {
        name: {**{f"b{b}": [] for b in BATCHES}, "prefill_ms": []} for name in runners
    }
    names = list(runners)
    for i in range(rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            r = runners[name]
            for b in BATCHES:
                out[name][f"b{b}"].append(b * TOKENS / r.decode_s(b))
            out[name]["prefill_ms"].append(r.prefill_s() * 1e3)
    return out


def spread(samples: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": [round(s, 3) for s in samples],
    }


# --- the result -------------------------------------------------------------------------------------


def goal(rows: list[dict[str, Any]], omitted: dict[str, str]) -> tuple[bool, str]:
    """Does an int4 row reach 3x PyTorch fp32 at batch 1 with top-1 >= 0.90, generation >= 0.80?"""
    why = []
    for r in (r for r in rows if r["row"] in INT4_ROWS):
        x, top1, gen = r["x_pytorch_b1"], r["top1_agreement"], r["generation_agreement"]
        misses = []
        if x < GOAL_SPEEDUP:
            misses.append(f"decode b1 {x:.2f}x < {GOAL_SPEEDUP:g}x PyTorch")
        if top1 is None or top1 < GOAL_TOP1:
            misses.append(f"top-1 {_num(top1)} < {GOAL_TOP1}")
        if gen is None or gen < GOAL_GEN:
            misses.append(f"generation agreement {_num(gen)} < {GOAL_GEN}")
        if not misses:
            return True, f"goal met ({r['row']}: {x:.2f}x PyTorch b1, top-1 {top1:.3f}, gen {gen:.3f})"
        why.append(f"{r['row']}: {', '.join(misses)}")
    why += [f"{name}: not in this sweep" for name in INT4_ROWS if name in omitted]
    return False, "goal not met: " + "; ".join(why)


def notes(res: dict[str, Any]) -> list[str]:
    """What the numbers are against, and how far the bandwidth ceiling can be trusted."""
    fid, gen = res["onnx_vs_torch_fidelity"], res["onnx_vs_torch_generation_agreement"]
    parity = (
        f"ONNX vs torch fidelity {_num(fid, '.4f')}, greedy generation agreement {_num(gen)}"
        if fid is not None or gen is not None
        else "the sweep recorded no ONNX-vs-torch parity"
    )
    out = [
        f"Quality is the sweep's, against the ORT fp32 graph, which stands in for PyTorch ({parity}). "
        "PyTorch's perplexity is that reference's; against itself KL/top-1/gen are 0/1/1 by definition, "
        "so none are shown."
    ]
    # A shared machine can stall one visit; the rotation spreads that over rows but cannot undo it.
    noisy = [
        f"{r['row']} {k.split('_')[-1]} {d['min']:.1f}-{d['max']:.1f}"
        for r in res["rows"]
        for k in ("decode_tok_s_b1", "decode_tok_s_b8")
        if (d := r[k])["max"] > NOISY * d["min"]
    ]
    if noisy:
        out.append(
            f"Noisy timing (rounds differ by more than {NOISY:g}x: {', '.join(noisy)}): the machine was "
            "busy; medians and ratios are rough, rerun with more --rounds on a quiet machine."
        )
    if any(r["bandwidth_share"] > 1 for r in res["rows"]):
        out.append(
            "Over 100% of the bandwidth: the copy figure is a rough, one-thread ceiling. Decoding reads "
            "weights on every thread and never writes them, and reads can stream faster than a copy, "
            "which must also write: a share over 100% says the ceiling is low, not that a row beats memory."
        )
    return out


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    ap.add_argument("--spec", type=Path, default=Path("pipelines/examples/smollm2-cpu.yaml"))
    ap.add_argument("--manifest", type=Path, help="benchmark this manifest instead of running the sweep")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch and ORT intra-op threads [all CPUs]"
    )
    args = ap.parse_args()
    if args.rounds < 1 or args.threads < 1:
        ap.error("--rounds and --threads must be at least 1")
    quiet_libraries()

    manifest_path = args.manifest or run_sweep(args.spec)
    manifest = json.loads(manifest_path.read_text())
    rows, omitted = pick_rows(manifest)
    root = stages_root(manifest_path, manifest)
    base = rows["ORT fp32"]
    load_id = next(s for s in base["stages"] if s.startswith("load-"))
    folder = Path(stage_record(root, load_id).get("path") or root / load_id)
    if not (folder / "config.json").is_file():
        raise SystemExit(f"{folder}: the load stage's model is gone (garbage-collected?)")
    ref_id = next((s for s in base["stages"] if s.startswith("reference-")), None)
    ref = stage_record(root, ref_id) if ref_id else {}

    # Both runtimes get the same explicit thread count: defaults differ (torch: physical cores).
    torch.set_num_threads(args.threads)
    texts = builtin_corpus()
    torch_runner = TorchRunner(folder, texts)
    runners: dict[str, Runner] = {TEACHER: torch_runner}
    runners.update({name: OrtRunner(Path(v["onnx"]), texts, args.threads) for name, v in rows.items()})
    samples = measure(runners, args.rounds)
    bandwidth = copy_bandwidth_gbs()

    torch_b1 = statistics.median(samples[TEACHER]["b1"])
    table = []
    for name in runners:
        v = rows.get(name)
        m = v["metrics"] if v else {}
        weight_bytes = m["size_mb"] * 1e6 if v else torch_runner.weight_bytes()
        # PyTorch counts whole: with tied embeddings (as SmolLM2's) the table is also the LM head,
        # which every step reads in full.
        streamed = weight_bytes - gathered_only_bytes(Path(v["onnx"])) if v else weight_bytes
        b1 = spread(samples[name]["b1"])
        quality: dict[str, float | None] = {k: m.get(k) for k in QUALITY}
        if not v:
            # The teacher against itself would be KL 0, top-1 1, generation 1: no measurement, so none shown.
            quality = dict.fromkeys(QUALITY, None)
            quality["perplexity"] = (ref.get("task_metrics") or {}).get("perplexity")
        table.append(
            {
                "row": name,
                "variant": v["id"] if v else None,
                "label": v["label"] if v else f"transformers, {folder}",
                "decode_tok_s_b1": b1,
                "decode_tok_s_b8": spread(samples[name]["b8"]),
                "prefill_ms": spread(samples[name]["prefill_ms"]),
                "x_pytorch_b1": b1["median"] / torch_b1,
                # per round, against the PyTorch sample of the same round: how steady the ratio is
                "x_pytorch_b1_rounds": [
                    round(a / t, 3) for a, t in zip(samples[name]["b1"], samples[TEACHER]["b1"], strict=True)
                ],
                "size_mb": weight_bytes / 1e6,
                **quality,
                "teacher": not v,
                "weight_gb_per_token": weight_bytes / 1e9,
                "implied_gb_s_b1": weight_bytes * b1["median"] / 1e9,
                "bandwidth_share": weight_bytes * b1["median"] / 1e9 / bandwidth,
                "streamed_gb_per_token": streamed / 1e9,
                "streamed_bandwidth_share": streamed * b1["median"] / 1e9 / bandwidth,
            }
        )
    met, goal_line = goal(table, omitted)
    flags = cpu_flags().split()
    fidelity = ref.get("onnx_vs_torch_fidelity", manifest.get("baseline", {}).get("onnx_vs_torch_fidelity"))
    result = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "isa": {f: f in flags for f in ISA},
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "manifest": str(manifest_path),
        "run_id": manifest.get("run_id"),
        "rounds": args.rounds,
        "decode": {"prompt_tokens": PROMPT, "new_tokens": TOKENS, "batches": list(BATCHES)},
        "prefill_tokens": PREFILL,
        "bandwidth_gb_s": bandwidth,
        "bandwidth_how": (
            f"np.copyto of a {COPY_MIB} MiB float32 array, median of {COPY_REPEATS}, "
            "2 x bytes (read + write), one thread"
        ),
        "rows": table,
        "omitted": omitted,
        "onnx_vs_torch_fidelity": fidelity,
        "onnx_vs_torch_generation_agreement": ref.get("onnx_vs_torch_generation_agreement"),
        "goal_met": met,
        "goal": goal_line,
    }
    result["notes"] = notes(result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)


def _print(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output would otherwise be cut to 80 columns and wrap every cell; no markup, since
    # "[min-max]" would read as a style tag and vanish.
    con = Console(width=None if sys.stdout.isatty() else 170, markup=False, highlight=False)
    isa = " ".join(f for f, on in res["isa"].items() if on) or "none of " + ", ".join(res["isa"])
    con.print(f"CPU: {res['cpu']}, {res['cores']} cores, {isa}")
    con.print(
        f"onnxruntime {res['onnxruntime']}, torch {res['torch']}, {res['threads']} threads; "
        f"sweep {res['run_id']}; medians of {res['rounds']} interleaved rounds [min-max]"
    )
    con.print(
        f"memory bandwidth {res['bandwidth_gb_s']:.1f} GB/s ({res['bandwidth_how']}); "
        "GB/s b1 = weight bytes x tok/s b1 (a decode step reads every weight once)"
    )
    t = Table(title=f"SmolLM2-135M decode: {PROMPT}-token prompt + {TOKENS} tokens; prefill 1 x {PREFILL}")
    cols = (
        "row",
        "tok/s b1",
        "tok/s b8",
        "prefill ms",
        "x PyTorch b1",
        "size MB",
        "perplexity",
        "KL",
        "top-1",
        "gen agr",
        "GB/s b1",
        "% of bw",
    )
    for c in cols:
        t.add_column(c, justify="left" if c == "row" else "right")
    for r in res["rows"]:
        b1, b8, pre = r["decode_tok_s_b1"], r["decode_tok_s_b8"], r["prefill_ms"]

        def q(key: str, fmt: str = ".3f", r: dict[str, Any] = r) -> str:
            return "teacher" if r["teacher"] else _num(r[key], fmt)

        t.add_row(
            r["row"],
            f"{b1['median']:.1f} [{b1['min']:.1f}-{b1['max']:.1f}]",
            f"{b8['median']:.1f} [{b8['min']:.1f}-{b8['max']:.1f}]",
            f"{pre['median']:.1f} [{pre['min']:.1f}-{pre['max']:.1f}]",
            f"{r['x_pytorch_b1']:.2f}",
            f"{r['size_mb']:.1f}",
            _num(r["perplexity"], ".2f"),
            q("kl_divergence", ".4f"),
            q("top1_agreement"),
            q("generation_agreement"),
            f"{r['implied_gb_s_b1']:.1f}",
            f"{r['bandwidth_share']:.0%}",
        )
    con.print(t)
    for r in res["rows"]:
        if not r["teacher"]:
            con.print(f"{r['row']}: {r['variant']} {r['label']}")
        if r["streamed_gb_per_token"] < 0.95 * r["weight_gb_per_token"]:
            con.print(
                f"  {r['row']}: {r['weight_gb_per_token'] - r['streamed_gb_per_token']:.3f} GB of its "
                f"{r['weight_gb_per_token']:.3f} GB are gather-only tables (one row read per token): "
                f"streaming the rest is {r['streamed_bandwidth_share']:.0%} of the bandwidth"
            )
    for name, why in res["omitted"].items():
        con.print(f"{name}: left out, {why}")
    for note in res["notes"]:
        con.print(note)
    con.print(res["goal"])


if __name__ == "__main__":
    main()
