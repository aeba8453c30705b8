"""The searcher: Ray Tune samples the space (sampler: Tune's generator, or Optuna's TPE), runs trials
as Tune trials with the spec's resources, and stops unpromising ones at a rung (scheduler: ASHA).

It decides nothing about compression: what a trial computes and how it scores are
pipelines.search's; this module translates the search problem into Tune's terms and streams
every result back to the driver's SearchLog.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from ray import tune

from slimline.pipelines.plan.space import Dim
from slimline.pipelines.run.search import SearchLog, SearchProblem


def domain(dim: Dim) -> Any:
    """One dimension as a Tune domain (choices are sampled as indices)."""
    if dim.kind == "choice":
        return tune.choice(list(range(len(dim.values))))
    if dim.kind == "int":
        if dim.step is not None:
            return tune.qrandint(int(dim.low), int(dim.high), int(dim.step))
        return (
            tune.lograndint(int(dim.low), int(dim.high) + 1)
            if dim.log
            else tune.randint(int(dim.low), int(dim.high) + 1)
        )
    if dim.step is not None:
        return (
            tune.qloguniform(dim.low, dim.high, dim.step)
            if dim.log
            else tune.quniform(dim.low, dim.high, dim.step)
        )
    return tune.loguniform(dim.low, dim.high) if dim.log else tune.uniform(dim.low, dim.high)


def _generator(problem: SearchProblem) -> Any:
    """grid and random: Tune's own generator over the listed points (or the space)."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune only limits concurrency by wrapping a Searcher; its own generator takes the limit itself.
    return BasicVariantGenerator(random_state=problem.seed, max_concurrent=problem.max_concurrent or 0)


def _tpe(problem: SearchProblem) -> Any:
    """tpe: Optuna's TPE sampler through Tune's OptunaSearch."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=problem.seed, n_startup_trials=4))


def _fifo(problem: SearchProblem) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _asha(problem: SearchProblem) -> Any:
    """Trials report once per rung; at each rung but the last, ASHA keeps the top
    1/reduction_factor (by score) going and stops the rest."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=problem.reports,
        grace_period=1,
        reduction_factor=problem.reduction_factor,
    )


# Sampler × scheduler, each resolved by name in one table (Ray Tune's own split). What a name
# means for the search (which points, how many rungs) is pipelines' decision, not these tables'.
SAMPLERS: dict[str, Callable[[SearchProblem], Any]] = {"grid": _generator, "random": _generator, "tpe": _tpe}
SCHEDULERS: dict[str, Callable[[SearchProblem], Any]] = {"fifo": _fifo, "asha": _asha}
# Tune's own generator limits its concurrency itself; a Searcher needs Tune's wrapper for it.
_SELF_LIMITING = {_generator}


@contextlib.contextmanager
def _ray_up(verbose: bool) -> Iterator[None]:
    """Use the Ray this process already joined (the Ray executor's), else an embedded local one."""
    import ray

    if ray.is_initialized():
        yield
        return
    from slimline.cluster.ray_executor import _loopback_only

    with _loopback_only():
        ray.init(
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=verbose,
        )
    try:
        yield
    finally:
        ray.shutdown()


POINT = "point"  # a grid's one parameter: the whole point

# Where results go, by key: Tune pickles its callbacks with the experiment's state, and a log
# (or a progress display holding a terminal) does not pickle; the callback holds only the key.
_SINKS: dict[str, tuple[SearchLog, Callable[[dict[str, Any]], None] | None]] = {}


class _Collect(tune.Callback):
    """Streams each trial's results, and its end, to the sink under `key` (defined at module
    level: cloudpickle then pickles it by reference, never the sinks with it)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        log, on_result = _SINKS[self.key]
        config = dict(trial.config)
        entry = log.result(trial.trial_id, config.get(POINT, config), result)
        if on_result is not None:
            on_result(entry)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        _SINKS[self.key][0].ended(trial.trial_id, "done")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        _SINKS[self.key][0].ended(trial.trial_id, "error")


class TuneSearcher:
    """Runs a search problem on Ray Tune; `search` returns when every trial has ended."""

    def __init__(self, *, verbose: bool = False) -> None:
        self.verbose = verbose

    def search(
        self,
        problem: SearchProblem,
        trial: Callable[[dict[str, Any], Callable[[dict[str, Any]], None], str], None],
        log: SearchLog,
        on_result: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Run every trial; each result goes to `log` (and `on_result`, e.g. a progress view)."""
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # The SearchLog is the record (the manifest's `search`): Tune's own CSV/JSON/TensorBoard
        # loggers would only duplicate it, and warn about every list in a result.
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
        key = str(id(log))
        _SINKS[key] = (log, on_result)

        def trainable(config: dict[str, Any]) -> None:
            point = config.get(POINT, config)  # listed points come whole
            trial(point, tune.report, tune.get_context().get_trial_id())

        listed = problem.points is not None
        space = (
            {POINT: tune.grid_search(problem.points)} if listed else {d.name: domain(d) for d in problem.dims}
        )
        resources = {"cpu": problem.cpus, "gpu": problem.gpus}
        sampler = SAMPLERS[problem.sampler]
        with _ray_up(self.verbose):
            tuner = tune.Tuner(
                tune.with_resources(trainable, resources),
                param_space=space,
                tune_config=tune.TuneConfig(
                    metric="score",
                    mode="max",
                    search_alg=sampler(problem),
                    scheduler=SCHEDULERS[problem.scheduler](problem),
                    num_samples=1 if listed else problem.trials,
                    max_concurrent_trials=None if sampler in _SELF_LIMITING else problem.max_concurrent,
                    time_budget_s=problem.time_s,
                    # A trial's process pays seconds of imports (torch, transformers, ORT): reuse it.
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name="search",
                    storage_path=problem.storage,
                    verbose=1 if self.verbose else 0,
                    callbacks=[_Collect(key)],
                    failure_config=tune.FailureConfig(max_failures=0),
                ),
            )
            try:
                tuner.fit()
            finally:
                _SINKS.pop(key, None)
