"""Will int8 pay off on this CPU? A micro-benchmark of one encoder layer, int8 against fp32, in ORT.

The same int8 graph ran 1.56x faster than fp32 on an AVX2-only machine and 2.3x on one with
AVX-512 VNNI: the integer dot-product instructions decide. This times one MiniLM-sized layer
(128 tokens, hidden 384, FFN 1536) both ways, interleaved, for a few seconds, so a user knows
before a sweep what dynamic int8 will buy here.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Instruction sets with 8-bit dot products (what ORT's int8 GEMM kernels are fast with).
VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")


def _cpuinfo(key: str) -> str:
    """The value of the first `key : value` line of /proc/cpuinfo ('' where there is none)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((x.partition(":")[2].strip() for x in lines if x.startswith(key)), "")


def peak_gops(threads: int, *, int8: bool = False) -> float:
    """The compute peak of `threads` cores in G operations/s (a multiply-add is 2), from the flags
    and the clock /proc/cpuinfo reports (the base clock: turbo makes the real peak higher).

    fp32: 2 FMA units x SIMD lanes (AVX-512: 16, AVX2: 8) x 2. int8: 4 times that with 8-bit dot
    products (VNNI's vpdpbusd: 4 multiply-adds per 32-bit lane), 2 times without (AVX2's
    vpmaddubsw pairs). Without FMA, one unit.
    """
    flags = cpu_flags().split()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    units = 2 if "fma" in flags else 1
    mhz = _cpuinfo("cpu MHz")
    ghz = float(mhz) / 1000 if mhz else 2.0
    fp32 = threads * units * lanes * 2 * ghz
    return fp32 * ((4 if any(f in flags for f in VNNI) else 2) if int8 else 1)


def cpu_flags() -> str:
    """The CPU features that decide which int8/fp16 kernels ORT can use."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return " ".join(f for f in _cpuinfo("flags").split() if f in wanted)


def cpu_model() -> str:
    """The CPU's marketing name, as the kernel reports it."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


@dataclass(frozen=True)
class Int8Probe:
    """fp32 and int8 medians (ms) of the layer and what they mean."""

    fp32_ms: float
    int8_ms: float
    flags: str

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.int8_ms

    def verdict(self) -> str:
        """One plain sentence."""
        why = "" if any(f in self.flags.split() for f in VNNI) else ": no VNNI (8-bit dot products)"
        if self.speedup >= 1.8:
            return f"int8 pays off here (x{self.speedup:.1f})"
        if self.speedup >= 1.2:
            return f"int8 helps a little here (x{self.speedup:.1f}){why}"
        return f"int8 gives little here (x{self.speedup:.1f}){why}"


def _layer(path: Path, tokens: int = 128, hidden: int = 384, inner: int = 1536) -> None:
    """One MiniLM-sized encoder layer: weight MatMuls (what int8 quantizes), attention between
    activations and the element-wise work (what stays fp32), so the ratio is a model's, not a GEMM's."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, rows: int, cols: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal((rows, cols)) * 0.05).astype(np.float32), name)

    weights = [weight(n, hidden, hidden) for n in ("wq", "wk", "wv", "wo")]
    weights += [weight("w1", hidden, inner), weight("w2", inner, hidden)]
    scale = numpy_helper.from_array(np.array(hidden**-0.5, np.float32), "scale")
    mm = helper.make_node
    nodes = [
        mm("MatMul", ["x", "wq"], ["q"]),
        mm("MatMul", ["x", "wk"], ["k"]),
        mm("MatMul", ["x", "wv"], ["v"]),
        mm("Transpose", ["k"], ["kt"], perm=[1, 0]),
        mm("MatMul", ["q", "kt"], ["s0"]),
        mm("Mul", ["s0", "scale"], ["s"]),
        mm("Softmax", ["s"], ["p"], axis=-1),
        mm("MatMul", ["p", "v"], ["a"]),
        mm("MatMul", ["a", "wo"], ["o"]),
        mm("Add", ["o", "x"], ["h"]),
        mm("MatMul", ["h", "w1"], ["f0"]),
        mm("Relu", ["f0"], ["f"]),
        mm("MatMul", ["f", "w2"], ["g"]),
        mm("Add", ["g", "h"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [tokens, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [tokens, hidden])],
        [*weights, scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every ORT of the last years reads
    onnx.save(model, str(path))


def probe_int8(seconds: float = 10.0, flags: str = "") -> Int8Probe:
    """Time the layer in fp32 and dynamic int8, alternating, for about `seconds`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from slimline.tasks.runtime import quiet_root_logger, session

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        _layer(fp32)
        with quiet_root_logger():
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
        sessions = [session(p) for p in (fp32, int8)]
    x = {"x": np.random.default_rng(1).standard_normal((128, 384)).astype(np.float32)}
    times: list[list[float]] = [[], []]
    for s in sessions:  # warm-up
        for _ in range(3):
            s.run(None, x)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times[0]) < 20:
        for i, s in enumerate(sessions):  # alternating: a slow spell hits both alike
            start = time.perf_counter()
            s.run(None, x)
            times[i].append(time.perf_counter() - start)
    return Int8Probe(float(np.median(times[0]) * 1e3), float(np.median(times[1]) * 1e3), flags)


def machine_facts(seconds: float) -> dict[str, Any]:
    """What `slimline doctor` reports of one machine: CPU, instruction sets, CUDA, the int8 probe."""
    from slimline.tasks.runtime import cuda_usable

    flags = cpu_flags()
    probe = probe_int8(seconds, flags)
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "cpu_flags": flags or "no AVX2",
        "cuda usable": cuda_usable(),
        "int8 vs fp32": f"{probe.verdict()}: one MiniLM-sized layer, {probe.fp32_ms:.2f} ms fp32, "
        f"{probe.int8_ms:.2f} ms int8 (dynamic, median of interleaved runs)",
    }
