"""slimline from Python: validate a spec, look at its plan, run it, load the champion.

    python pipelines/examples/python_api.py                      # the MiniLM demo spec beside this file
    python pipelines/examples/python_api.py my-spec.yaml --plan-only

The run is the one `slimline run` does (the same stages, cache, selection, champion gate and MLflow
registration); an orchestrator (Airflow, Prefect, Dagster) calls these same four functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import slimline


def main(argv: list[str] | None = None) -> int:
    """Validate, plan and (unless --plan-only) run SPEC, then embed two sentences with its champion."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(Path(__file__).with_name("minilm-cpu.yaml")))
    parser.add_argument("--executor", default="local", help="local (in-process) or ray")
    parser.add_argument("--plan-only", action="store_true", help="stop after printing the plan")
    args = parser.parse_args(argv)
    try:
        spec = slimline.validate(args.spec)  # a path, a dict or a Spec; SpecError names file and field
    except slimline.SpecError as exc:
        print(exc, file=sys.stderr)
        return 2
    plan = slimline.plan(spec)
    print(f"slimline {slimline.__version__}: {len(plan.stages)} stages, {len(plan.variants)} variants")
    if args.plan_only:
        return 0
    manifest = slimline.run(spec, executor=args.executor, registry="mlflow")
    print(f"run {manifest.run_id}: {manifest.status}; selected {manifest.selected}")
    for entry in manifest.registered:
        print(f"registered {entry['name']} version {entry['version']} {entry.get('aliases', [])}")
    name = spec.registry.model_name or spec.name
    if spec.model.task == "feature-extraction" and manifest.registered:
        model = slimline.load(f"{name}@{spec.registry.alias}", tracking_uri=spec.registry.tracking_uri)
        vectors = model.embed(["slimline compresses models.", "The champion answers here."])
        print(f"{name}@{spec.registry.alias}: embeddings of shape {vectors.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
