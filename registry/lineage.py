"""What a registered version carries: lineage tags, metrics as tags, and how to serve its ONNX file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from slimline.pipelines.run.records import numeric
from slimline.tasks.base import package_version

TAG = "slimline."
METRICS_TAG = "slimline.metrics"
EXAMPLE_TEXTS = ["slimline keeps the model small.", "It still has to understand what it reads."]


def example_feeds(onnx_path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A real two-sentence input for the graph and its output (for the signature and input example)."""
    from slimline.tasks.graph import feeds_for
    from slimline.tasks.runtime import session

    feeds = feeds_for(onnx_path, EXAMPLE_TEXTS, 2, 8)
    return feeds, session(onnx_path).run(None, feeds)[0]


def pip_requirements() -> list[str]:
    """What serving the ONNX file needs, pinned to what produced it."""
    pkgs = ("onnxruntime-gpu", "onnxruntime", "onnx", "numpy")
    return [f"{pkg}=={v}" for pkg in pkgs if (v := package_version(pkg)) is not None]


def version_tags(manifest: dict[str, Any], row: dict[str, Any]) -> dict[str, str]:
    """Lineage of one registered variant, as model version tags."""
    env = manifest["environment"]
    m = row["metrics"]
    tags = {
        f"{TAG}variant_id": row["id"],
        f"{TAG}label": row["label"],
        f"{TAG}run_id": manifest["run_id"],
        f"{TAG}spec_hash": manifest["spec_hash"],
        f"{TAG}base_model_digest": str(manifest.get("base_model_digest")),
        f"{TAG}pruning": json.dumps(row["pruning"]),
        f"{TAG}quantization": json.dumps(row["quantization"]),
        # The curve itself is a metric of the variant's run; the tag keeps what made the model.
        f"{TAG}distillation": json.dumps(
            {k: v for k, v in (row.get("distillation") or {}).items() if k != "loss_curve"} or None
        ),
        f"{TAG}fidelity": f"{m.get('fidelity', float('nan')):.6f}",
        f"{TAG}speedup": f"{m.get('speedup_vs_baseline', float('nan')):.4f}",
        f"{TAG}versions": json.dumps(
            {k: env.get(k) for k in ("python", "torch", "transformers", "onnxruntime", "slimline")}
        ),
        f"{TAG}cpu_flags": env.get("cpu_flags") or "",
        f"{TAG}providers": ",".join(env.get("providers", [])),
        f"{TAG}onnx_path": str(row.get("onnx")),
    }
    # One tag for all metrics: the registry UI shows every tag in the versions table.
    tags[METRICS_TAG] = json.dumps(numeric(m), sort_keys=True)
    if row.get("served"):  # what its endpoint delivered in this run (evaluate.serving)
        load = (manifest.get("deployed") or {}).get("load") or {}
        tags[f"{TAG}served"] = json.dumps({**row["served"], "load": load}, sort_keys=True)
    if (pipeline := _pipeline(row.get("onnx"))) is not None:
        tags[f"{TAG}pipeline"] = json.dumps(pipeline, sort_keys=True)
    return tags


def _pipeline(onnx: str | None) -> dict[str, Any] | None:
    """The output pipeline (pooling, normalize, max length...) recorded beside the graph, if any."""
    from slimline.tasks.graph import META_NAME
    from slimline.tasks.pipeline import META_KEY

    meta = Path(onnx).parent / META_NAME if onnx else None
    if meta is None or not meta.is_file():
        return None
    got = json.loads(meta.read_text()).get(META_KEY)
    return got if isinstance(got, dict) else None


def metrics_of(tags: dict[str, str]) -> dict[str, float]:
    """The metrics a version was registered with, read back from its tags."""
    return {k: float(v) for k, v in json.loads(tags.get(METRICS_TAG, "{}")).items()}


def version_description(manifest: dict[str, Any], row: dict[str, Any]) -> str:
    """A registered version's MLflow description, in Markdown: what it is, how it measured against
    the baseline of its run, and why it was chosen (shown on the version's page in the UI)."""
    m = row["metrics"]
    parts = []
    if isinstance(m.get("speedup_vs_baseline"), int | float):
        parts.append(f"{m['speedup_vs_baseline']:.2f}x the speed of the fp32 baseline")
    if isinstance(m.get("fidelity"), int | float):
        parts.append(f"fidelity {m['fidelity']:.4f}")
    if isinstance(m.get("size_mb"), int | float):
        parts.append(f"{m['size_mb']:.1f} MB")
    selected = manifest.get("selected") or []
    rank = selected.index(row["id"]) + 1 if row["id"] in selected else None
    why = (
        f"pick #{rank} of {len(selected)} under the spec's constraints and objectives"
        if rank
        else "registered"
    )
    return (
        f"**{row['label']}** (variant `{row['id']}`): {', '.join(parts) or 'not measured'}.\n\n"
        f"Chosen as {why}, measured side by side with the baseline in run `{manifest['run_id']}`."
    )
