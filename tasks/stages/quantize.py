"""The quantize stage: one quantization technique (tasks/quantization/*) applied to a graph folder.

Every method reads a (preferably optimised) graph and writes a new folder with the quantized
graph plus the tokenizer and meta.json, so evaluation never needs the torch model.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from slimline.tasks.base import Record, TechniqueConfig, atomic_dir
from slimline.tasks.catalog import make_config, technique_of
from slimline.tasks.graph import (
    ONNX_NAME,
    copy_sidecars,
    onnx_size_bytes,
    op_counts,
    read_meta,
    without_initializer_shapes,
)
from slimline.tasks.runtime import quiet_root_logger
from slimline.tasks.stages.base import StageCall, StageKind


def _private_input(src: Path, where: Path) -> Path:
    """Link the source graph's folder into `where` and return the graph there.

    ORT's quantizers write scratch files next to their input (`model-inferred.onnx`), so two
    quantizations of one graph running at once, in two Ray workers, would trample each other.
    External weights are copied: onnx refuses to read a data file with several hard links.
    """
    where.mkdir(parents=True)
    for f in src.parent.iterdir():
        if f.is_file() and f.name.startswith(src.name + "."):
            shutil.copy2(f, where / f.name)
        elif f.is_file():
            try:
                os.link(f, where / f.name)
            except OSError:  # another filesystem, or no hard links there
                shutil.copy2(f, where / f.name)
    return where / src.name


def apply(
    cfg: TechniqueConfig,
    onnx_path: Path,
    out_dir: Path,
    *,
    calibration: list[str] | None = None,
    device: str = "cpu",
    max_length: int = 128,
) -> Record:
    """Quantize the graph at `onnx_path` into `out_dir/model.onnx`."""
    technique = technique_of(cfg, "quantize")
    src = Path(onnx_path)
    read_meta(src)  # fail early, with a clear error, on a folder that is not a slimline graph
    with atomic_dir(Path(out_dir)) as tmp, quiet_root_logger():
        graph = without_initializer_shapes(_private_input(src, tmp / "input"))
        text = calibration if cfg.needs_calibration() else None  # only techniques that read text get it
        # A technique may say more than its graph: e.g. the sensitivity table behind mixed precision.
        extra = technique.apply(
            cfg, graph, tmp / ONNX_NAME, calibration=text, device=device, max_length=max_length
        )
        shutil.rmtree(tmp / "input")
        copy_sidecars(src.parent, tmp)
    out = Path(out_dir) / ONNX_NAME
    before, after = onnx_size_bytes(src), onnx_size_bytes(out)
    return {
        "stage": "quantize",
        "method": cfg.method,
        "config": cfg.to_json(),
        "path": str(out),
        "ops": op_counts(out),
        "size_mb": after / 1e6,
        "compression": before / after if after else float("nan"),
        **(extra or {}),
    }


# The stage kind (see tasks/stages/base.py). Imported here, below `apply`, so that this part and
# the technique part above can be edited apart; hoist into the imports when convenient.


def run(call: StageCall) -> Record:
    """Quantize the parent's graph with the technique the config names."""
    ctx = call.ctx
    return apply(
        make_config(call.config, "quantize"),
        call.src,
        call.out,
        device=ctx.device,
        calibration=ctx.calibration,
        max_length=ctx.max_length,
    )


STAGE = StageKind(
    kind="quantize",
    run=run,
    doc="apply one quantization technique to the optimised graph",
    cost=2.0,
)
