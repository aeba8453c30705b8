"""What the quantization tests share: optimised fp32 graphs of a tiny encoder and a tiny decoder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from slimline.tasks import export, optimize
from slimline.tasks.export import ExportConfig
from slimline.tasks.graph import feeds_for
from slimline.tasks.runtime import session


@pytest.fixture(scope="session")
def graphs(tiny_model, tmp_path_factory, texts) -> dict[str, Path]:
    """{"bert": fused encoder graph, "llama": decoder graph}, built once per session."""
    out = {}
    for family in ("bert", "llama"):
        task = "feature-extraction" if family == "bert" else "causal-lm"
        d = tmp_path_factory.mktemp(f"q-{family}")
        e = export.apply(
            ExportConfig(exporter="legacy"), tiny_model(family), d / "onnx", task=task, texts=texts
        )
        o = optimize.apply(optimize.OptimizeConfig(), Path(e["path"]), d / "opt", texts=texts)
        out[family] = Path(o["path"])
    return out


@pytest.fixture(scope="session")
def unfused(tiny_model, tmp_path_factory, texts) -> Path:
    """The tiny encoder exported but not optimized: its attention is MatMuls of two activations
    (the optimized graph fuses them into one Attention op, as ORT does for BERT)."""
    out = tmp_path_factory.mktemp("peers-src") / "onnx"
    rec = export.apply(
        ExportConfig(exporter="legacy"), tiny_model("bert"), out, task="feature-extraction", texts=texts
    )
    return Path(rec["path"])


@pytest.fixture(scope="session")
def runs() -> Callable[[Path, list[str]], np.ndarray]:
    """runs(graph, texts) -> its output on real text, asserted finite."""

    def run(path: Path, texts: list[str]) -> np.ndarray:
        out = session(path).run(None, feeds_for(path, texts, 2, 9))[0]
        assert np.isfinite(out).all()
        return out

    return run
