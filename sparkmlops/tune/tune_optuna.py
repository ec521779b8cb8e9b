"""Hyperparameter search with Optuna, tracked as one parent run (the study) with one nested run per trial.

The study lives in MLflow through MLflow's own Optuna storage (``mlflow.optuna.storage.MlflowStorage``):
the entry point's run is the study and every trial is a run nested in it, so the UI shows the same
parent and children as tune_hyperopt's, and Optuna's own records (params, ``value``, intermediate
values) sit in each trial's run beside the project's ``val_*`` metrics.

engine=mllib: a TPE study on the driver drives the Spark ML pipeline of `train`; each trial is a
distributed fit, trials run one after another in one SparkSession on one cached split. MLlib fits all
of a forest's trees in one call and reports nothing in between, so these trials are never pruned.
engine=sklearn: MLflow's ``MlflowSparkStudy`` runs single-node scikit-learn trials in Spark tasks, as
many at once as ``parallelism``; each trial grows its forest in stages and reports the validation loss
after each, and Optuna's median pruner stops a trial whose loss is worse than the median of earlier
trials at the same stage.

Determinism: the sampler is seeded with ``seed``; with one trial at a time (engine=mllib, or
engine=sklearn with parallelism=1) the same seed gives the same trials. MLflow reseeds the sampler of
each parallel task, so parallel sklearn trials differ from run to run, as Optuna's own n_jobs > 1 do.

The search sees only the training split; the best configuration is refit on all of it and scored on
the test split, as in tune_hyperopt.
"""

from __future__ import annotations

import functools
import time

from sparkmlops.core import compat, tracking
from sparkmlops.core.entry_points import EntryPoint
from sparkmlops.core.spark import quiet_python_task_warnings, ship_package
from sparkmlops.fitting import sklearn_forest
from sparkmlops.tune import optuna_study, search

# engine=sklearn: the forest is grown in this many warm-started steps, the loss reported after each.
PRUNING_STAGES = 4


def suggest(trial, space: dict, family: str = "") -> dict:
    """A configuration from the shared search space (see tune.search.mllib_space), asked of Optuna,
    with train's parameter names. A family's own parameters are asked under names unique to it
    ("rf.max_depth"): Optuna's TPE models each name on the trials that had it."""
    params = {}
    for name, (kind, *args) in space.items():
        label = search.family_parameter(family, name) if family else name
        if kind == "int":
            low, high, step = args
            params[name] = trial.suggest_int(label, low, high, step=step)
        elif kind == "choice":
            params[name] = trial.suggest_categorical(label, list(args[0]))
        elif kind == "family":
            params[name] = trial.suggest_categorical(label, list(args[0]))
            params.update(suggest(trial, args[0][params[name]], family=params[name]))
        else:
            raise ValueError(f"unknown search-space kind {kind!r} for {name}")
    return params


def early_stop(trials_without_progress: int, study, _trial) -> None:
    """Optuna callback: stop the study once tune.search.no_progress says so. Stateless: on Spark each
    task asks it of every trial stored so far and stops its own share."""
    from optuna.trial import TrialState

    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    losses = [t.value if t.state == TrialState.COMPLETE else None for t in sorted(finished, key=lambda t: t.number)]
    if search.no_progress(losses, trials_without_progress):
        study.stop()


def run_trial(context: search.TrialContext, space: dict, evaluate, trial) -> float:
    """One trial in the run Optuna's MLflow storage made for it: the loss for Optuna, the validation
    metrics for the UI. A failure tags the run with the error and is re-raised for Optuna to record
    (the study catches it and goes on); a pruned trial logs how long it ran."""
    import optuna

    tracking.set_tracking_uri(context.tracking_uri)  # a Spark worker has not the driver's environment
    run = tracking.ChildRun(tracking.client(context.tracking_uri), compat.optuna_trial_run_id(trial))
    started = time.perf_counter()
    run.set_tags({"engine": context.engine, **search.where_trial_runs()})
    trial_params = suggest(trial, space)
    trial.set_user_attr("params", trial_params)
    # The storage logs Optuna's names ("gbt.max_depth"); the run also gets train's ("max_depth").
    run.log_params({k: v for k, v in trial_params.items() if k not in trial.params})
    try:
        metrics = evaluate(trial_params, trial)
        loss = search.loss_of(metrics, context.metric)
    except optuna.TrialPruned:
        run.log_metrics({"trial_seconds": time.perf_counter() - started})
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:1000]}"
        trial.set_user_attr("error", error)
        run.set_tags({"error": error})
        raise
    seconds = time.perf_counter() - started
    trial.set_user_attr("metrics", metrics)
    run.log_metrics({**{f"val_{k}": v for k, v in metrics.items()}, "loss": loss, "trial_seconds": seconds})
    return loss


def evaluate_sklearn(arrays, seed: int, metric: str, trial_params: dict, trial) -> dict:
    """A scikit-learn forest grown in stages, its validation loss reported after each; Optuna's pruner
    may stop it between stages."""
    import optuna

    x_fit, y_fit, x_valid, y_valid, spec = arrays
    forest = sklearn_forest.ForestParams(**trial_params)
    stages = sklearn_forest.fit_in_stages(spec, forest, seed, x_fit, y_fit, PRUNING_STAGES)
    for stage, (trees, answer) in enumerate(stages):
        metrics = sklearn_forest.answer_metrics(spec, y_valid, answer(x_valid))
        # step = stage (from 0, as Optuna counts), not trees: the pruner compares trials of different sizes
        # at the same share grown
        trial.report(search.loss_of(metrics, metric), step=stage)
        if trees < forest.num_trees and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at {trees} of {forest.num_trees} trees")
    return metrics


def sklearn_objective(context: search.TrialContext, space: dict, broadcast, seed: int, trial) -> float:
    """What a Spark task of MlflowSparkStudy runs for each of its trials."""
    return run_trial(context, space, functools.partial(evaluate_sklearn, broadcast.value, seed, context.metric), trial)


def mllib_objective(data: search.SearchData, spec, trial) -> float:
    loss = None
    try:
        loss = run_trial(
            data.context, data.space, lambda trial_params, _: search.evaluate_mllib(data, spec, trial_params), trial
        )
        return loss
    finally:
        shown = f"loss={loss:.4f}" if loss is not None else f"FAILED ({trial.user_attrs.get('error', '')})"
        print(f"tune_optuna: trial {trial.number}: {shown} {trial.params}", flush=True)


def _trial_rows(trials) -> list[dict]:
    from optuna.trial import TrialState

    rows = []
    for trial in sorted(trials, key=lambda t: t.number):
        status = {TrialState.COMPLETE: "ok", TrialState.PRUNED: "pruned"}.get(trial.state, "failed")
        error = trial.user_attrs.get("error", "") if status != "pruned" else ""
        if status == "failed" and not error:
            error = "cancelled or lost"
        rows.append(
            {
                "trial": trial.number,
                "status": status,
                "loss": trial.value if status == "ok" else None,
                "run_id": compat.optuna_trial_run_id(trial),
                "params": trial.user_attrs.get("params", trial.params),
                "metrics": trial.user_attrs.get("metrics", {}),
                "seconds": trial.duration.total_seconds() if trial.duration else None,
                "error": error,
            }
        )
    return rows


def _sampler_and_pruner(params: search.TuneParams):
    import optuna

    sampler = optuna.samplers.TPESampler(seed=params.seed, n_startup_trials=search.startup_trials(params.max_evals))
    # A trial is compared with earlier ones only once a few have finished, and not before its second stage.
    pruner = optuna.pruners.MedianPruner(n_startup_trials=search.startup_trials(params.max_evals), n_warmup_steps=1)
    return sampler, pruner


def tune_and_log(spark, params: search.TuneParams, space: dict | None = None) -> search.TuneResult:
    """Run the search inside the active MLflow run (the parent, and the study) and log its story;
    ``space`` overrides the engine's default search space (same format as tune.search.mllib_space)."""
    return search.search_and_log(spark, params, space, "tune_optuna", run_trials)


def run_trials(spark, params: search.TuneParams, data: search.SearchData, spec) -> tuple[list[dict], float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the project prints one line per trial itself
    run_id = data.context.parent_run_id
    sampler, pruner = _sampler_and_pruner(params)
    timeout = params.timeout_seconds or None
    callbacks = [functools.partial(early_stop, params.early_stop_trials)] if params.early_stop_trials else None
    started = time.perf_counter()
    if params.engine == "mllib":
        with optuna_study.optuna_study_in_run(run_id, sampler, pruner, on_spark=False) as study:
            study.optimize(
                functools.partial(mllib_objective, data, spec),
                n_trials=params.max_evals,
                timeout=timeout,
                catch=(Exception,),
                callbacks=callbacks,
            )
    else:
        ship_package(spark)
        quiet_python_task_warnings()
        broadcast = spark.sparkContext.broadcast(search.sklearn_arrays(data, spec))  # sent once per executor
        try:
            with optuna_study.optuna_study_in_run(run_id, sampler, pruner, on_spark=True) as study:
                objective = functools.partial(sklearn_objective, data.context, data.space, broadcast, params.seed)
                optuna_study.optimize_on_spark(
                    study, run_id, objective, params.max_evals, timeout, params.parallelism, callbacks
                )
        finally:
            broadcast.destroy()
    return _trial_rows(study.trials), time.perf_counter() - started


TUNE_OPTUNA = EntryPoint(
    name="tune_optuna",
    script="tune_optuna.py",
    summary="Tune the price model with Optuna and log the best one.",
    params=search.TuneParams,
    job=lambda spark, params, checked: tune_and_log(spark, checked),
    run_name=lambda p: f"tune_optuna {p.engine} {p.max_evals} trials",
    report=search.summary_report("tune_optuna"),
    needs_spark_context="broadcasts and RDD partition counts",
)
