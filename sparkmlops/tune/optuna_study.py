"""Optuna studies kept in MLflow runs, for tune_optuna: MLflow's own Optuna storage (a study is a run, each
trial a run nested in it) and its Spark study, which runs the trials in Spark tasks. With the
exported model's own onnx_pyfunc.py, the one module outside core/ that imports MLflow: this is MLflow's
Optuna integration, which only this tuner uses.
"""

from __future__ import annotations

import contextlib

from sparkmlops.core.tracking import client, portable_tracking_uri


@contextlib.contextmanager
def optuna_study_in_run(run_id: str, sampler, pruner, on_spark: bool):
    """An Optuna study kept in MLflow by MLflow's own ``MlflowStorage`` (a study is a run, each trial a
    run nested in it) whose study is the run ``run_id``, so the trials are that run's children as every
    search's are. With ``on_spark``, MLflow's ``MlflowSparkStudy``, which runs the trials in Spark tasks.

    MlflowStorage finds a study by its run's name (the newest run of that name, on the driver and in each
    Spark task): for the search the run is named ``<name>-<run id prefix>``, which no other run has, and
    tagged with the study's direction (minimize: every loss here is minimised), so the study opens as a
    resumed one instead of creating another run. Its own name (the user's --run-name, or the project's)
    is given back when the block ends, however it ends.
    """
    import optuna
    from mlflow.optuna.storage import MlflowStorage

    store = client()
    run = store.get_run(run_id)
    own_name = run.info.run_name
    study_name = f"{own_name.replace(chr(39), '')}-{run_id[:8]}"  # a quote would break MLflow's name filter
    store.set_tag(run_id, "mlflow.runName", study_name)
    try:
        store.set_tag(run_id, "optuna.study_direction", optuna.study.StudyDirection.MINIMIZE.name)
        storage = MlflowStorage(experiment_id=run.info.experiment_id)
        if on_spark:
            from mlflow.pyspark.optuna.study import MlflowSparkStudy

            study = MlflowSparkStudy(
                study_name, storage, sampler=sampler, pruner=pruner, mlflow_tracking_uri=portable_tracking_uri()
            )
        else:
            study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
        if storage.get_study_id_from_name(study_name) != run_id:
            raise RuntimeError(f"the Optuna study {study_name!r} is not the run {run_id}: another run took its name")
        yield study
    finally:
        store.set_tag(run_id, "mlflow.runName", own_name)


def optimize_on_spark(
    study, run_id: str, objective, n_trials: int, timeout: float | None, n_jobs: int, callbacks: list | None = None
) -> None:
    """MlflowSparkStudy.optimize, after which the study's run (the entry point's, still logging) is
    RUNNING again: MlflowSparkStudy ends it as it ends its own study runs."""
    try:
        study.optimize(
            objective, n_trials=n_trials, timeout=timeout, n_jobs=n_jobs, catch=(Exception,), callbacks=callbacks
        )
    finally:
        client().update_run(run_id, status="RUNNING")
