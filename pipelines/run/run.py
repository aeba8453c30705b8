"""One pipeline run: data → plan → execute the DAG → time latency → select → manifest."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from slimline.pipelines import leases
from slimline.pipelines.errors import FatalInputError
from slimline.pipelines.manifest import Manifest
from slimline.pipelines.plan.plan import Combo, Plan, Stage, build_plan, stage_id
from slimline.pipelines.ports import Executor, NullObserver, Observer, Registry, ServingProbe
from slimline.pipelines.report.report import write_reports
from slimline.pipelines.run import champion
from slimline.pipelines.run.data import RunData, prepare_data, resolve_max_length
from slimline.pipelines.run.deployed import measure_deployed
from slimline.pipelines.run.peers import compare_peers, peers_for
from slimline.pipelines.run.records import RUN_ID, RunStatus, Status, failed, succeeded
from slimline.pipelines.run.rows import environment, overall_status, variant_rows
from slimline.pipelines.run.select import Selection, select
from slimline.pipelines.run.stage import Context, cached
from slimline.pipelines.spec.spec import Spec
from slimline.tasks.base import Record, write_json
from slimline.tasks.digest import source_digest
from slimline.tasks.pipeline import FALLBACK_MAX_LENGTH


def preflight(spec: Spec) -> RunData:
    """Check the inputs a run needs before any work (or any cluster) starts; returns the data.

    A missing model or data file is bad input: TaskError here, exit 2 in the CLI.
    """
    from slimline.tasks.load import ModelSourceError, hub_problem, resolve_source

    source = resolve_source(spec.model.source)
    if source == spec.model.source and not Path(source).exists():  # a Hub id
        problem = hub_problem(source)
        if problem is not None:
            raise ModelSourceError(problem)
    return prepare_data(spec)


def execute(
    plan: Plan, ctx: Context, executor: Executor, *, max_in_flight: int = 8, observer: Observer | None = None
) -> dict[str, Record]:
    """Run every stage once its parent and needs are done; results are taken in completion order.

    On Ctrl-C the outstanding tasks are cancelled, every unfinished stage is recorded as
    interrupted, and Interrupted carries those records (with what did finish) to the caller.
    """
    obs = observer or NullObserver()
    records: dict[str, Record] = {}
    in_flight: dict[Any, str] = {}
    try:
        for sid in plan.stages:
            done = cached(ctx, sid)
            if done is not None:
                records[sid] = {**done, "cached": True}
                obs.finished(plan.stages[sid], records[sid])
        priority = plan.priorities()
        pending = sorted((sid for sid in plan.stages if sid not in records), key=lambda s: -priority[s])
        while pending or in_flight:
            for sid in list(pending):
                if len(in_flight) >= max_in_flight:
                    break
                st = plan.stages[sid]
                deps = [d for d in [st.parent, *st.needs] if d]
                if not all(d in records for d in deps):
                    continue
                pending.remove(sid)
                bad = next((records[d] for d in deps if not succeeded(records[d])), None)
                if bad is not None:  # a failed or skipped parent: its descendants cannot run
                    records[sid] = {"status": bad["status"], "reason": bad.get("reason"), "kind": st.kind}
                    obs.finished(st, records[sid])
                    continue
                obs.started(st)
                in_flight[executor.submit(asdict(st), {d: records[d] for d in deps}, ctx)] = sid
            if not in_flight:
                for sid in pending:  # nothing runnable and nothing running: unmet dependencies
                    records[sid] = failed(plan.stages[sid].kind, "unmet dependency")
                pending.clear()
                continue
            handle, rec = executor.wait(list(in_flight))
            sid = in_flight.pop(handle)
            records[sid] = rec
            obs.finished(plan.stages[sid], rec)
    except KeyboardInterrupt as exc:
        executor.cancel(list(in_flight))
        for sid, st in plan.stages.items():  # in flight, pending, or caught between the two
            records.setdefault(sid, failed(st.kind, "interrupted"))
        raise Interrupted(records) from exc
    return records


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a phase; carries what that phase had finished."""

    def __init__(self, records: dict[str, Record]) -> None:
        super().__init__()
        self.records = records


def time_variants(
    plan: Plan,
    records: dict[str, Record],
    spec: Spec,
    ctx: Context,
    executor: Executor,
    observer: Observer,
    timing_root: Path,
    extra: dict[str, Path] | None = None,
) -> dict[str, Record]:
    """Latency of every finished graph, the baseline's included, in one task that has a whole node.

    Nothing of ours runs beside it, and the graphs are timed side by side (see
    tasks.evaluate.onnx_latency_many). Latency is measured afresh in every run and never taken
    from the cache: a ratio to the baseline is only honest when both were timed together.
    """
    graphs = {}
    for v in plan.variants:
        last = records.get(v.stages[-1], {}) if v.status != Status.SKIPPED else {}
        if succeeded(last):
            graphs[v.id] = {"path": last["path"]}
    graphs.update({key: {"path": str(path)} for key, path in (extra or {}).items()})  # e.g. the champion
    if not graphs:
        return {}
    info = executor.describe()
    lat = spec.evaluate.latency
    cfg = lat.model_copy(update={"threads": lat.threads or info.timing_cpus}).to_json()
    sid = stage_id(None, "latency", cfg, {"node": info.timing_node, "run": timing_root.parent.name})
    st = Stage(sid, "latency", cfg, None, f"latency of {len(graphs)} graphs")
    try:  # the observer's calls too: a Ctrl-C may surface there (slimline.cli.interrupt)
        observer.started(st)
        handle = executor.submit(asdict(st), graphs, replace(ctx, root=str(timing_root)), exclusive=True)
        rec = executor.wait([handle])[1]
        observer.finished(st, rec)
    except KeyboardInterrupt as exc:
        raise Interrupted({}) from exc
    if not succeeded(rec):
        return {vid: rec for vid in graphs}
    return {vid: {**stats, "status": Status.SUCCEEDED} for vid, stats in rec["latency"].items()}


def prepare(
    spec: Spec,
    stage_root: Path,
    *,
    gpus: int = 0,
    threads: int | None = None,
    combos: list[Combo] | None = None,
    eval_samples: int | None = None,
    resume_fractions: tuple[float, ...] = (),
    peers: bool = False,
) -> tuple[Plan, Context]:
    """The plan and the stage context of a spec: data read, ids computed, nothing run.

    `combos` replace the spec's grid (a search's trials); `eval_samples` keeps only the first
    eval texts (a search's cheaper rungs: only the stages that evaluate get other ids; the graphs
    they evaluate are the full run's). A distillation may resume from the same one stopped after
    each of `resume_fractions` of its steps. `peers`: the spec's `baselines:` join the plan as
    peer variants (a run's plan; not a search trial's).
    """
    full = preflight(spec)
    data = full.head(eval_samples) if eval_samples is not None else full
    # data.max_length: the model's own maximum unless the spec gives one (capped at it); the plan's
    # ids and the context both read the resolved value.
    spec = resolve_max_length(spec)
    n = spec.data.max_length or FALLBACK_MAX_LENGTH
    # File digests are cached in the artifact root: a cached run does not read a big checkpoint again.
    model = source_digest(spec.model.source, Path(stage_root).parent / "digests.json")
    plan = build_plan(
        spec,
        data.digest(n),
        gpus_available=gpus > 0,
        train_digest=data.train_digest(n),
        model_digest=model,
        combos=combos,
        resume_fractions=resume_fractions,
        build_digest=full.digest(n),  # fewer eval texts evaluate the same graphs
        peers=peers_for(spec) if peers else (),
    )
    leases.claim(stage_root, plan.stages)  # kept from gc while this process's lease is held
    ctx = Context(
        root=str(stage_root),
        task=spec.model.task,
        eval_texts=data.eval_texts,
        calibration=data.calibration,
        labels=data.labels,
        pairs=data.pairs,
        train_texts=data.train,
        max_length=n,
        eval_batch=spec.evaluate.batch_size,
        threads=threads or spec.resources.cpus_per_task,
        device="cuda" if spec.resources.gpus_per_task > 0 else "cpu",
    )
    return plan, ctx


@leases.scoped  # from plan to manifest (a caller that publishes holds it longer)
def run(
    spec: Spec,
    executor: Executor,
    *,
    threads: int | None = None,
    observer: Observer | None = None,
    max_in_flight: int | None = None,
    run_id: str | None = None,
    tick_id: str | None = None,
    registry: Registry | None = None,
    combos: list[Combo] | None = None,
    search: dict[str, Any] | None = None,
    serving: ServingProbe | None = None,
) -> dict[str, Any]:
    """Run the whole sweep and write `<artifacts>/<run_id>/manifest.json`; returns the manifest.

    With a `registry` that holds a champion for the spec's model name, the champion is evaluated
    on this run's data and timed beside the candidates (pipelines.champion): what the gate reads.

    With `spec.evaluate.serving` and a `serving` probe, the pick and the baseline are then served
    side by side and loaded (pipelines.run.deployed): the manifest's `deployed` section.

    Ctrl-C still writes a consistent manifest (status failed, unfinished stages interrupted) and
    then re-raises KeyboardInterrupt; every finished stage stays cached for the next run.
    """
    for what, value in (("tick id", tick_id), ("run id", run_id)):
        if value is not None and not RUN_ID.fullmatch(value):
            # Ids become folder names under the artifact root: nothing may lead outside it.
            raise FatalInputError(f"{what} {value!r}: expected letters, digits, '.', '_' or '-' (≤ 120)")
    obs = observer or NullObserver()
    started = dt.datetime.now(dt.UTC)
    info = executor.describe()
    env = environment(info)
    root = Path(spec.artifacts.path).resolve()
    plan, ctx = prepare(spec, root / "stages", gpus=env["gpus"], threads=threads, combos=combos, peers=True)
    env["threads"] = {
        "per_task": ctx.threads,
        "latency": spec.evaluate.latency.threads or "every CPU of the node",
    }
    obs.planned(plan)
    # One task per worker: a freed worker then gets the best stage ready at that moment, rather
    # than whatever was queued in Ray earlier; the round trip is milliseconds against seconds.
    bound = max_in_flight or max(1, info.workers)
    # A scheduled tick always gets the same run id, so a repeated tick is the same run everywhere.
    default_id = f"{spec.name}-{started.strftime('%Y%m%dT%H%M%SZ')}-{spec.digest()[:6]}"
    run_id = run_id or (f"{spec.name}-{tick_id}" if tick_id else default_id)
    executor.prepare(root)  # e.g. every node must see the artifact root
    records: dict[str, Record] = {}
    latency: dict[str, Record] = {}
    interrupted: Interrupted | None = None
    champ = None
    try:
        records = execute(plan, ctx, executor, max_in_flight=bound, observer=obs)
        if registry is not None:
            try:
                champ = champion.measure(registry, spec, plan, records, ctx, executor, obs, root)
            except KeyboardInterrupt as exc:  # Ctrl-C while the champion is evaluated
                raise Interrupted(records) from exc
        # A champion whose graph is one of this run's (byte for byte) is timed once, with it: the
        # latency stage shares a twin's samples (tasks.evaluate.twins).
        extra = {champion.KEY: champ.graph} if champ and champ.graph and not champ.error else {}
        latency = time_variants(plan, records, spec, ctx, executor, obs, root / run_id / "timing", extra)
    except Interrupted as exc:
        interrupted = exc
        records = records or exc.records
    rows = variant_rows(plan, records, latency)
    samples = {vid: lat["samples_ms"] for vid, lat in latency.items() if "samples_ms" in lat}
    candidates = [r for r in rows if r["id"] != plan.baseline and not r.get("peer")]
    choice = Selection([], {}, {}) if interrupted else select(candidates, spec.select, samples)
    base_row = next(r for r in rows if r["id"] == plan.baseline)
    peers = None if interrupted else compare_peers(rows, choice.selected, samples, spec.select)
    deployed = None
    if spec.evaluate.serving is not None and serving is not None and not interrupted:
        deployed = measure_deployed(
            serving, spec.evaluate.serving, rows, plan.baseline, choice.selected, ctx.eval_texts, obs
        )
    ref = next((records[s] for s, st in plan.stages.items() if st.kind == "reference" and s in records), {})
    manifest = {
        "run_id": run_id,
        "spec_hash": spec.digest(),
        "status": RunStatus.FAILED if interrupted else overall_status(rows, plan.baseline),
        "started": started.isoformat(),
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "interrupted": interrupted is not None,
        "environment": env,
        "baseline": {
            **base_row["metrics"],
            "variant": plan.baseline,
            "onnx_vs_torch_fidelity": ref.get("onnx_vs_torch_fidelity"),
        },
        "variants": rows,
        "selected": choice.selected,
        "rejected": choice.rejected,
        "ties": choice.ties,
        "champion": champion.summarize(champ, latency, choice.selected, spec) if champ else None,
        "registered": [],
        "tick_id": tick_id,
        # Where the computed stages ran (Ray node ids): how a multi-node run shows it used every node.
        "stages_per_node": dict(Counter(str(r["ray_node"]) for r in records.values() if r.get("ray_node"))),
        "submission_id": os.environ.get("SLIMLINE_SUBMISSION_ID"),  # set when submitted as a Ray job
        "base_model_digest": plan.model_digest,  # the digest the load stage's id hashes
        "search": search,  # a search's trials, rungs and best-so-far (None for a grid)
        "deployed": deployed,  # the pick and the baseline served and loaded (evaluate.serving)
        "peers": peers,  # the pick against the best peer recipe (baselines:)
    }
    write_json(root / run_id / "spec.json", spec.public())  # what `registry push` reads
    # Through the typed contract: a field of the wrong type fails here, not in a later reader.
    manifest = Manifest.model_validate(manifest).to_json()
    write_json(root / run_id / "manifest.json", manifest)
    write_reports(manifest, root / run_id, spec.select)
    if interrupted:
        raise interrupted
    return manifest
