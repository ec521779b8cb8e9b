"""Runs in MLflow: starting and ending them, their parameters, metrics, tags, datasets, figures and
tables, nested runs, and launching projects. With core.mlflow_models (models) and core.model_registry (the
Model Registry), the modules that call MLflow (and tune/optuna_study.py, MLflow's Optuna integration).

Tracking goes wherever MLFLOW_TRACKING_URI points (MLflow's own default otherwise). Under
``mlflow run`` the run already exists (MLFLOW_RUN_ID) and ``tracked_run`` continues it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import tempfile
import time
from pathlib import Path

from sparkmlops.core import compat, environment, errors
from sparkmlops.core.imports import lazy_module

mlflow = lazy_module("mlflow")


@contextlib.contextmanager
def tracked_run(run_name: str | None = None, tags: dict[str, str] | None = None):
    """Start (or continue) a run; end it with the status the outcome leaves (core.errors): FINISHED on
    success or drift, KILLED on Ctrl-C, FAILED otherwise, tagged with the script's exit code.

    A run `mlflow run` created without a name (MLflow named it "upbeat-gnu-759") gets ``run_name``, so the
    UI names runs after what they are however they were launched; a name the user gave (--run-name) is
    kept, whatever its shape.
    """
    resumed = bool(os.environ.get("MLFLOW_RUN_ID"))  # start_run takes the variable out of the environment
    run = mlflow.start_run(run_name=None if resumed else run_name)
    with _ended_by_outcome():
        if run_name and resumed and compat.is_generated_run_name(run.info.run_name or ""):
            mlflow.set_tag("mlflow.runName", run_name)
        if tags:
            mlflow.set_tags(tags)
        yield run


@contextlib.contextmanager
def nested_run(run_name: str, tags: dict[str, str]):
    """A run nested under the active one (a pipeline's step), ended as ``tracked_run`` ends its run."""
    run = mlflow.start_run(run_name=run_name, nested=True, tags=tags)
    with _ended_by_outcome():
        yield run


@contextlib.contextmanager
def _ended_by_outcome():
    """End the active run with the status and exit_code tag of how the block ended."""
    try:
        yield
    except BaseException as exc:
        status = errors.run_status_of(exc)
        with contextlib.suppress(Exception):
            # exit_code: what `python <script>.py` exits with; `mlflow run` exits 1 for any failure.
            tags = {"exit_code": str(errors.exit_code_of(exc))}
            if status != "FINISHED":
                tags["error"] = str(exc)[:5000] or type(exc).__name__
            mlflow.set_tags(tags)
        mlflow.end_run(status=status)
        raise
    else:
        with contextlib.suppress(Exception):
            mlflow.set_tags({"exit_code": "0"})
        mlflow.end_run(status="FINISHED")


def end_refused_run(run_id: str, message: str, exit_code: int) -> None:
    """End a run the entry point never started (``mlflow run`` created it, click refused the options)
    as ``tracked_run`` ends a refused one: tags ``exit_code`` and ``error``, status FAILED. Only a RUNNING
    run: a MLFLOW_RUN_ID left in a shell from an earlier run names one that has ended."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if client.get_run(run_id).info.status != "RUNNING":
        return
    client.set_tag(run_id, "exit_code", str(exit_code))
    client.set_tag(run_id, "error", message[:5000])
    client.set_terminated(run_id, "FAILED")


def environment_tags(spark_master: str | None = None) -> dict[str, str]:
    """Library versions, git state and Spark master, so a run says what produced it."""
    tags = {**environment.library_versions(), **environment.git_state()}
    if spark_master:
        tags["spark_master"] = spark_master
    return tags


def set_tags(tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)


def log_params(params: dict) -> None:
    """Log params the run does not have yet (`mlflow run` logs the -P values itself, quoted)."""
    run = mlflow.active_run()
    existing = mlflow.get_run(run.info.run_id).data.params if run else {}
    new = {k: ("" if v is None else v) for k, v in params.items() if k not in existing}
    if new:
        mlflow.log_params(new)


def run_parameters(run) -> dict[str, str]:
    """The run's parameters as the entry point received them, however the run was launched.

    ``mlflow run`` logs each ``-P`` value (and each default) shell-quoted, as it puts it on the command
    line: an empty value is logged as the two characters ``''``, a path with a space as ``'/a b'``. The
    script then logs only the parameters MLflow did not (tracking.log_params), unquoted. So for a project
    run a value that is exactly one shell-quoted word is unquoted; values the script logged never have
    that form unless they contain quotes (a path such as ``/data/it's``), which do not split to one word.
    """

    params = dict(run.data.params)
    if "mlflow.project.entryPoint" not in run.data.tags:
        return params
    unquoted = {}
    for key, value in params.items():
        try:
            words = shlex.split(value)
        except ValueError:
            words = None
        unquoted[key] = words[0] if words is not None and len(words) == 1 and shlex.quote(words[0]) == value else value
    return unquoted


def is_missing(exc: BaseException) -> bool:
    """True when MLflow says what was asked for does not exist (a run, model, version, alias or artifact):
    the user's input is wrong. Anything else (a server that is down or refuses, 5xx, storage I/O) is a
    failure of the environment, which a retry may cure: callers must not report it as bad input."""
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return False
    # INVALID_PARAMETER_VALUE: the store refused the reference itself (an alias that is not set, a
    # malformed id), never a transport problem, which MLflow reports as INTERNAL_ERROR or the HTTP status.
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def mlflow_exception_class():
    """MlflowException, for ``except`` clauses (MLflow is imported when first asked for)."""
    from mlflow.exceptions import MlflowException

    return MlflowException


def artifact_store_answers(run_id: str) -> bool:
    """True when the run's artifact store can be listed (what is not found there is then truly missing);
    False when listing it fails (the store is down, refuses, or cannot be read). A run that does not exist,
    or no run at all (''), is missing, so True."""
    from mlflow import MlflowClient

    if not run_id:
        return True
    try:
        MlflowClient().list_artifacts(run_id)
    except Exception as exc:  # requests' errors, OSError, MlflowException: all mean the store did not answer
        return is_missing(exc) and get_run(run_id) is None
    return True


def get_run(run_id: str):
    """The run, or None when the store has no such run (an unreachable store raises)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_run(run_id)
    except MlflowException as exc:
        if is_missing(exc):
            return None
        raise


def run_parameters_of(run_id: str) -> dict[str, str]:
    """``run_parameters`` of the run ``run_id``; empty when there is no id or no such run (a model logged
    outside a run, or a run deleted since)."""
    run = get_run(run_id) if run_id else None
    return run_parameters(run) if run else {}


def tracking_uri() -> str:
    return mlflow.get_tracking_uri()


def set_tracking_uri(uri: str) -> None:
    """On a Python worker, where the driver's environment is not: log and load where the driver does."""
    mlflow.set_tracking_uri(uri)


def log_step_metrics(run_id: str, metrics: dict[str, float], step: int) -> None:
    """Metrics of one step (a stream's micro-batch) in one call, from any thread."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    mlflow.MlflowClient().log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])


def dataset_schema(df, source: str) -> dict[str, str]:
    """Column -> type of ``df`` as MLflow records a Spark dataset's schema (to compare with a logged one)."""
    return {c["name"]: c["type"] for c in mlflow.data.from_spark(df, path=source).schema.to_dict()}


def run_project(project_dir: str, **kwargs):
    """mlflow.projects.run of a project folder (asynchronously: the caller tags the run and waits)."""
    return mlflow.projects.run(project_dir, synchronous=False, **kwargs)


def log_metrics(metrics: dict[str, float], step: int | None = None, model_id: str | None = None, dataset=None) -> None:
    """Metrics of the active run; with ``model_id`` (and the ``dataset`` they were measured on) also
    linked to that logged model, so the experiment's Models view shows them."""
    mlflow.log_metrics(metrics, step=step, model_id=model_id, dataset=dataset)


def log_spark_dataset(
    df, source: str, name: str, context: str, digest: str, label_col: str | None = None, num_rows: int | None = None
):
    """Record ``df`` as a dataset input of the run (the UI's Dataset column), with a content digest.

    With ``num_rows`` known, the dataset's profile says so: MLflow would otherwise run an approximate
    count through Python workers (seconds, and a job that keeps running on large data).
    """
    dataset = mlflow.data.from_spark(df, path=source, name=name, digest=digest, targets=label_col)
    if num_rows is not None:
        dataset = _counted_spark_dataset_class()(
            df=df, source=dataset.source, targets=label_col, name=name, digest=digest, num_rows=num_rows
        )
    mlflow.log_input(dataset, context=context)
    return dataset


@functools.cache
def _counted_spark_dataset_class():
    """A SparkDataset whose profile is the row count the caller already has (defined at first use, as
    MLflow is imported)."""
    from mlflow.data.spark_dataset import SparkDataset

    class CountedSparkDataset(SparkDataset):
        def __init__(self, *args, num_rows: int, **kwargs):
            super().__init__(*args, **kwargs)
            self._num_rows = num_rows

        @property
        def profile(self):
            return {"num_rows": self._num_rows}

    return CountedSparkDataset


def log_figure(figure, artifact_file: str) -> None:
    mlflow.log_figure(figure, artifact_file)


def log_dict(dictionary: dict, artifact_file: str) -> None:
    mlflow.log_dict(dictionary, artifact_file)


def log_artifact_file(local_path: str, artifact_dir: str | None = None) -> None:
    mlflow.log_artifact(local_path, artifact_dir)


def log_dataframe_csv(pandas_df, artifact_file: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        pandas_df.to_csv(path, index=False)
        parent = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), None if parent == "." else parent)


def active_run_id() -> str:
    run = mlflow.active_run()
    return run.info.run_id if run else ""


def portable_tracking_uri() -> str:
    """The tracking URI with relative local paths made absolute, for processes with another cwd
    (Spark's Python workers). On a cluster, point MLFLOW_TRACKING_URI at a server the executors reach."""
    uri = mlflow.get_tracking_uri()
    for prefix in ("sqlite:///", "file://"):
        if uri.startswith(prefix):
            path = uri[len(prefix) :]
            return uri if path.startswith("/") else prefix + str(Path(path).resolve())
    if "://" not in uri:
        return str(Path(uri).resolve())
    return uri


def client(tracking_uri: str | None = None):
    """An MlflowClient: for writing to runs other than the active one (children, trials)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


class ChildRun:
    """A nested run written through the client: works in a Spark worker, where no run is active."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


@contextlib.contextmanager
def child_run(
    parent_run_id: str,
    experiment_id: str,
    run_name: str,
    tags: dict[str, str] | None = None,
    tracking_uri: str | None = None,
):
    """Create a run nested under ``parent_run_id``; FINISHED on success, FAILED (tag ``error``) on error."""
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client = MlflowClient(tracking_uri)
    run = client.create_run(
        experiment_id, run_name=run_name, tags={MLFLOW_PARENT_RUN_ID: parent_run_id, **(tags or {})}
    )
    child = ChildRun(client, run.info.run_id)
    try:
        yield child
    except BaseException as exc:
        with contextlib.suppress(Exception):
            client.set_tag(child.run_id, "error", str(exc)[:5000] or type(exc).__name__)
        client.set_terminated(child.run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    else:
        client.set_terminated(child.run_id, "FINISHED")


def child_runs(parent_run_id: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10000
    )


def fail_unfinished_children(parent_run_id: str) -> int:
    """Children a crashed worker left RUNNING end as FAILED, so the UI never shows ghosts."""
    from mlflow import MlflowClient

    client = MlflowClient()
    stuck = [r for r in child_runs(parent_run_id) if r.info.status == "RUNNING"]
    for run in stuck:
        client.set_tag(run.info.run_id, "error", "the trial's worker ended before the trial did")
        client.set_terminated(run.info.run_id, "FAILED")
    return len(stuck)


def target_experiment_id() -> str:
    """The experiment a run started now would go to (before any run is active): the run `mlflow run`
    created, else MLFLOW_EXPERIMENT_ID, else MLFLOW_EXPERIMENT_NAME (created if new), else Default."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if os.environ.get("MLFLOW_RUN_ID"):
        return client.get_run(os.environ["MLFLOW_RUN_ID"]).info.experiment_id
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if name:
        experiment = client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment else client.create_experiment(name)
    return "0"


def dataset_digests(run) -> dict[str, str]:
    """{context: digest} of the datasets the run logged as inputs ("training", "testing", ...)."""
    found = {}
    for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
        context = next((t.value for t in dataset_input.tags if t.key == "mlflow.data.context"), "")
        found[context] = dataset_input.dataset.digest
    return found


def experiment_id() -> str:
    return mlflow.active_run().info.experiment_id


def set_run_tags(run_id: str, tags: dict[str, str]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
