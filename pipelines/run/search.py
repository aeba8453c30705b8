"""Search: trials are points of the spec's space, climbing fidelity rungs; the finalists then get
the same latency phase, selection and gate as a grid's variants.

This module is policy only. What a trial computes (`run_trial`) runs wherever the searcher puts
it; the searcher itself (Ray Tune, in cluster/tune.py) samples points, stops unpromising trials
at a rung (ASHA) and reports results back here (`SearchLog`). A trial's stages go through the
content-addressed stage cache, so two trials that need the same load, prune, distillation or
export compute it once (stages.run_stage holds a file lock per stage id meanwhile).
"""

from __future__ import annotations

import functools
import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from slimline.pipelines import leases
from slimline.pipelines.locks import single_flight
from slimline.pipelines.plan.plan import Combo
from slimline.pipelines.plan.space import Dim, check_space, decode, grid_points
from slimline.pipelines.ports import Executor, Observer, Registry, ServingProbe
from slimline.pipelines.run.local import LocalExecutor
from slimline.pipelines.run.records import DONE
from slimline.pipelines.run.rows import variant_rows
from slimline.pipelines.run.run import execute, preflight, prepare, run
from slimline.pipelines.run.select import MAXIMISE, constraint_problems
from slimline.pipelines.spec.search import Rung
from slimline.pipelines.spec.spec import SelectSpec, Spec
from slimline.tasks import evaluate

# Below every feasible score: a trial that misses a constraint ranks by how far it missed.
INFEASIBLE = -1e6
# Timed in a trial for the scheduler only (never for the verdict): a few rounds suffice.
TRIAL_REPEATS = 6


@dataclass(frozen=True)
class TrialSetup:
    """What a trial needs besides its point: small and picklable (it travels to a Tune worker)."""

    spec_json: str
    root: str  # the artifact root (absolute)
    rungs: tuple[int, ...]  # the rungs this trial climbs, in order
    threads: int = 1
    gpus: int = 0


@dataclass(frozen=True)
class SearchProblem:
    """What the searcher must know: the dimensions, sampler × scheduler and their limits, the resources."""

    dims: list[Dim]
    sampler: str  # grid | random | tpe: what the searcher's factory table knows
    scheduler: str  # fifo | asha
    trials: int
    reports: int  # results a finishing trial reports (one per rung it climbs)
    seed: int = 0
    time_s: float | None = None
    max_concurrent: int | None = None
    reduction_factor: int = 2
    cpus: float = 1.0
    gpus: float = 0.0
    storage: str = ""  # where the searcher may keep its own files
    # The points to visit, once each: a grid's every distinct recipe, or random/asha's sample of them.
    points: list[dict[str, Any]] | None = None


def distinct_points(spec: Spec, dims: list[Dim]) -> list[dict[str, Any]]:
    """The grid's points, one per distinct recipe: dimensions of an entry that was not chosen
    (the heads range when pruning is `none`) would otherwise repeat the same recipe."""
    seen: set[str] = set()  # by repr, which names every config field: linear in the points
    out = []
    for point in grid_points(dims):
        key = repr(decode(spec, point))
        if key not in seen:
            seen.add(key)
            out.append(point)
    return out


FINITE_LIMIT = 20_000  # grid points enumerated to sample distinct recipes; beyond, Tune samples


def sampled_points(spec: Spec, dims: list[Dim], trials: int, seed: int) -> list[dict[str, Any]] | None:
    """`trials` distinct candidate recipes drawn at random, or None when the space is too large
    or continuous to enumerate (Tune then samples it, and may repeat itself).

    Tune's random sampler draws with replacement: on a small discrete space it proposes the
    same recipe again (its stages come from the cache, but its trial slot is spent), and the
    baseline recipe (no pruning, no quantization), which is never a candidate.
    """
    sizes = [d.size() for d in dims]
    if any(n is None for n in sizes) or math.prod(n or 0 for n in sizes) > FINITE_LIMIT:
        return None
    points = [p for p in distinct_points(spec, dims) if not _is_baseline(decode(spec, p))]
    return random.Random(seed).sample(points, min(trials, len(points)))


def _is_baseline(combo: Combo) -> bool:
    return combo.pruning is None and combo.quantization is None and combo.distillation is None


def rungs_of(spec: Spec) -> tuple[int, ...]:
    """Under asha trials climb every rung; under fifo they evaluate the last (full) rung only."""
    assert spec.search is not None
    n = len(spec.search.rungs)
    return tuple(range(n)) if spec.search.multi_fidelity else (n - 1,)


def at_rung(combo: Combo, rung: Rung) -> Combo:
    """The combo at a rung's fidelity: its distillation stops after that fraction of its steps
    (on the full run's schedule, so that the next rung resumes from this one's checkpoint)."""
    kd = combo.distillation
    if kd is None or rung.distill_fraction >= 1.0 or not kd.resumable:  # no later rung could resume it
        return combo
    stop = max(1, math.ceil(rung.distill_fraction * kd.steps))
    return combo._replace(distillation=kd.model_copy(update={"stop_after": min(stop, kd.steps)}))


def objective_value(metrics: dict[str, Any], objective: str) -> float:
    """The first objective turned so that larger is better (latency: the speedup over the baseline)."""
    if objective in ("latency_p50_ms", "latency_p95_ms"):
        return float(metrics.get("speedup_vs_baseline", math.nan))
    value = float(metrics.get(objective, math.nan))
    return value if objective in MAXIMISE else -value


def score(metrics: dict[str, Any], select: SelectSpec) -> tuple[float, list[str]]:
    """The scheduler's one number (larger is better) and what makes the trial infeasible.

    Feasible: the first objective. Infeasible: below every feasible score, by the relative
    distance to the constraints it misses, so that the sampler still learns which way is better.
    """
    problems = constraint_problems(metrics, select)
    if not problems:
        value = objective_value(metrics, select.objectives[0])
        return (value if math.isfinite(value) else INFEASIBLE * 2), []
    miss = 0.0
    for name, bound in select.constraints.items():
        v = metrics.get(name)
        if v is None or not math.isfinite(float(v)):
            miss += 1.0
        elif bound.min is not None and v < bound.min:
            miss += (bound.min - v) / max(abs(bound.min), 1e-9)
        elif bound.max is not None and v > bound.max:
            miss += (v - bound.max) / max(abs(bound.max), 1e-9)
    return INFEASIBLE - miss, problems


def _quick_latency(plan: Any, records: dict[str, Any], spec: Spec, ctx: Any, root: Path) -> dict[str, Any]:
    """The trial's graph timed beside the baseline's: for the scheduler, never for the verdict.

    One trial times at a time on a machine (a file lock), so trials do not time each other.
    """
    graphs = {}
    for v in (plan.variants[0], plan.variants[-1]):
        rec = records.get(v.stages[-1]) if v.stages else None
        if rec and rec.get("status") in DONE:
            graphs[v.id] = Path(rec["path"])
    if len(graphs) < 2 and plan.variants[0] is not plan.variants[-1]:
        return {}
    lat = spec.evaluate.latency
    cfg = lat.model_copy(
        update={
            "repeats": min(lat.repeats, TRIAL_REPEATS),
            "rounds": 1,
            "threads": ctx.threads,
            "decode_repeats": 3,
        }
    )
    texts = ctx.calibration or ctx.eval_texts
    with single_flight(root / ".locks" / "trial-timing.lock", wait=True):
        stats = evaluate.onnx_latency_many(graphs, cfg, texts, device=ctx.device)
    return {k: {**v, "status": "succeeded"} for k, v in stats.items()}


def run_trial(setup: TrialSetup, point: dict[str, Any], report: Any, trial_id: str = "") -> None:
    """Evaluate one point at each of its rungs, reporting after each; the searcher may stop it
    between rungs. Every stage goes through the shared stage cache."""
    spec = Spec.model_validate_json(setup.spec_json)
    assert spec.search is not None
    combo = decode(spec, point)
    root = Path(setup.root)
    with leases.holding(root / "stages"):  # gc must not remove a rung's stages under the next
        _rungs(spec, setup, combo, root, report, trial_id)


def _rungs(spec: Spec, setup: TrialSetup, combo: Combo, root: Path, report: Any, trial_id: str) -> None:
    assert spec.search is not None
    started = time.perf_counter()
    for r in setup.rungs:
        rung = spec.search.rungs[r]
        n = None if rung.eval_samples == "all" else int(rung.eval_samples)
        plan, ctx = prepare(
            spec,
            root / "stages",
            gpus=setup.gpus,
            threads=setup.threads,
            combos=[at_rung(combo, rung)],
            eval_samples=n,
            resume_fractions=tuple(x.distill_fraction for x in spec.search.rungs),
        )
        records = execute(plan, ctx, LocalExecutor(), max_in_flight=1)
        variant = plan.variants[-1]
        latency = _quick_latency(plan, records, spec, ctx, root)
        row = next(x for x in variant_rows(plan, records, latency) if x["id"] == variant.id)
        metrics = {k: v for k, v in row["metrics"].items() if isinstance(v, int | float)}
        value, problems = (
            score(metrics, spec.select)
            if row["status"] in DONE
            else (INFEASIBLE * 2, [f"{row['status']}: {row.get('reason')}"])
        )
        mine = [s for s in variant.stages if s in records]
        report(
            {
                "score": value,
                "rung": r,
                "feasible": not problems,
                "why": "; ".join(problems),
                "variant": variant.id,
                "label": variant.label,
                "status": str(row["status"]),
                "metrics": metrics,
                "computed": [s for s in mine if not records[s].get("cached")],
                "cached": [s for s in mine if records[s].get("cached")],
                "resumed_from_step": (row.get("distillation") or {}).get("resumed_from_step"),
                "trial_seconds": time.perf_counter() - started,
            }
        )


@dataclass
class SearchLog:
    """The driver's record of a search, filled from the searcher's reports as they arrive."""

    spec: Spec
    started: float = field(default_factory=time.monotonic)
    trials: dict[str, dict[str, Any]] = field(default_factory=dict)
    best: list[dict[str, Any]] = field(default_factory=list)  # best-so-far, each time it improves

    def result(self, trial: str, point: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """Record one rung of one trial; returns the trial's entry."""
        t = time.monotonic() - self.started
        entry = self.trials.setdefault(
            trial, {"trial": trial, "point": point, "rungs": [], "status": "running"}
        )
        entry["label"], entry["variant"] = result.get("label"), result.get("variant")
        entry["rungs"].append(
            {
                **{
                    k: result.get(k)
                    for k in (
                        "rung",
                        "score",
                        "feasible",
                        "why",
                        "metrics",
                        "computed",
                        "cached",
                        "resumed_from_step",
                    )
                },
                "wall_s": round(t, 2),
            }
        )
        last = len(self.spec.search.rungs) - 1 if self.spec.search else 0
        final = result.get("rung") == last and result.get("feasible")
        if final and (not self.best or result["score"] > self.best[-1]["score"]):
            self.best.append(
                {
                    "wall_s": round(t, 2),
                    "score": result["score"],
                    "trial": trial,
                    "label": result.get("label"),
                }
            )
        return entry

    def ended(self, trial: str, status: str) -> None:
        """A trial ended: finished (climbed every rung), stopped early by the scheduler, or failed."""
        entry = self.trials.get(trial)
        if entry is None:
            self.trials[trial] = {"trial": trial, "point": {}, "rungs": [], "status": "error"}
            return
        last = len(self.spec.search.rungs) - 1 if self.spec.search else 0
        reached = entry["rungs"][-1]["rung"] if entry["rungs"] else None
        if status == "error":
            entry["status"] = "error"
        elif reached == last:
            entry["status"] = "finished"
        else:
            entry["status"], entry["stopped_at_rung"] = "stopped", reached

    def finalists(self) -> list[Combo]:
        """The combos of trials that reached the last rung (deduplicated; order of arrival)."""
        out: list[Combo] = []
        for entry in self.trials.values():
            if entry["status"] == "finished":
                combo = decode(self.spec, entry["point"])
                if combo not in out:
                    out.append(combo)
        return out

    def summary(self, problem: SearchProblem) -> dict[str, Any]:
        """The manifest's `search` block."""
        assert self.spec.search is not None
        entries = list(self.trials.values())
        return {
            "strategy": self.spec.search.label,
            "sampler": problem.sampler,
            "scheduler": problem.scheduler,
            "dims": [d.name for d in problem.dims],
            "rungs": [r.model_dump(mode="json") for r in self.spec.search.rungs],
            "wall_s": round(time.monotonic() - self.started, 2),
            "trials_started": len(entries),
            "trials_finished": sum(e["status"] == "finished" for e in entries),
            "trials_stopped": sum(e["status"] == "stopped" for e in entries),
            "trials_failed": sum(e["status"] == "error" for e in entries),
            "best_so_far": self.best,
            "trials": entries,
        }


@leases.scoped
def search_and_run(
    spec: Spec,
    executor: Executor,
    searcher: Any,
    *,
    threads: int | None = None,
    observer: Observer | None = None,
    registry: Registry | None = None,
    max_in_flight: int | None = None,
    tick_id: str | None = None,
    on_result: Any = None,
    serving: ServingProbe | None = None,
) -> dict[str, Any]:
    """Search the spec's space, then run the finalists like a grid (cached stages, one latency
    phase with the baseline and the champion, selection, manifest); returns the manifest."""
    assert spec.search is not None
    dims = check_space(spec)
    preflight(spec)  # bad model or data: exit 2 before any trial starts
    info = executor.describe()
    root = Path(spec.artifacts.path).resolve()
    executor.prepare(root)
    setup = TrialSetup(
        spec.model_dump_json(), str(root), rungs_of(spec), threads or spec.resources.cpus_per_task, info.gpus
    )
    problem = SearchProblem(
        dims,
        spec.search.sampler,
        # One rung leaves nothing to stop early at: fifo, whatever the spec asks.
        spec.search.scheduler if len(setup.rungs) > 1 else "fifo",
        spec.search.trials,
        len(setup.rungs),
        seed=spec.search.seed,
        time_s=spec.search.budget.time_s if spec.search.budget else None,
        max_concurrent=spec.search.max_concurrent or max(1, info.workers),
        reduction_factor=spec.search.reduction_factor,
        cpus=float(spec.resources.cpus_per_task),
        gpus=float(spec.resources.gpus_per_task) if info.gpus else 0.0,
        storage=str(root / "search"),
    )
    if spec.search.sampler == "grid":
        problem = replace(problem, points=distinct_points(spec, dims))
    elif spec.search.sampler == "random":
        sampled = sampled_points(spec, dims, spec.search.trials, spec.search.seed)
        problem = replace(problem, points=sampled) if sampled is not None else problem
    log = SearchLog(spec)
    searcher.search(problem, functools.partial(run_trial, setup), log, on_result)
    summary = log.summary(problem)
    return run(
        spec,
        executor,
        threads=threads,
        observer=observer,
        registry=registry,
        max_in_flight=max_in_flight,
        tick_id=tick_id,
        combos=log.finalists(),
        search=summary,
        serving=serving,
    )
