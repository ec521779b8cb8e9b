"""Shared fixtures: one local Spark session, one real MLflow SQLite store, and helpers to run entry points.

Subprocesses (``python train.py``, ``mlflow run``) get the same store and a small Spark configuration
through environment variables, as a user would set them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparkmlops.core import cli, tracking
from sparkmlops.core.spark import get_spark
from sparkmlops.data.generators import ensure_default_data
from sparkmlops.train.train import TrainParams, train_and_log
from sparkmlops.train.train_per_group import PerGroupParams, train_per_group_and_log
from sparkmlops.train.train_sklearn import SklearnTrainParams, train_sklearn_and_log
from tools import model_server

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# get_spark sets PYSPARK_PYTHON in this process; commands the tests start must see the user's own value.
_USER_PYSPARK_PYTHON = os.environ.get("PYSPARK_PYTHON")
REAL_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data" / "sf-airbnb"
REAL_DATA = REAL_DATA_DIR / "sf-airbnb-clean.parquet"
REAL_DATA_100P = REAL_DATA_DIR / "sf-airbnb-clean-100p.parquet"
EXPERIMENT = "sparkmlops-tests"
PER_GROUP_MIN_ROWS = 150
SHARED_TRAIN_PARAMS = TrainParams(num_trees=10, max_depth=4)  # trained_run's (the data: the generated default)
# The suite is CPU-bound on 2 cores (two pytest-xdist workers keep both busy), so every JVM it starts is
# tuned for short lives on tiny data: the C1 JIT only and the serial collector (C2's compiler threads and
# G1's concurrent threads cost more CPU than they save in JVMs that live seconds to minutes), no adaptive
# query re-planning (many small queries: 8% of in-process time), no whole-stage code generation (compiling
# each small query's Java costs more than it saves on a few hundred rows). None of it changes a result.
JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
# Small, quiet Spark for the session and every process a test starts: 2 cores, few shuffle partitions, no
# UI, and the driver's ports on 127.0.0.1 only.
SPARK_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "2g",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.codegen.wholeStage": "false",
    "spark.driver.extraJavaOptions": JVM_OPTIONS,
    "spark.executor.extraJavaOptions": JVM_OPTIONS,
}
PYSPARK_SUBMIT_ARGS = " ".join(
    ["--master local[2]"] + [f"--conf {k}={shlex.quote(v)}" for k, v in SPARK_CONF.items()] + ["pyspark-shell"]
)
# Test modules, longest first (measured with pytest-xdist, 2 workers; unlisted ones follow in their own
# order): `make test` hands whole modules to the workers in this order, so none waits behind a long one.
LONGEST_FIRST = [  # by the suite's own --durations (seconds per module, 2026-12-03)
    "e2e/test_bad_inputs.py",
    "tune/test_tune.py",
    "e2e/test_your_data.py",
    "e2e/test_bad_inputs_reproduce.py",
    "e2e/test_cluster.py",
    "serve/test_export_onnx.py",
    "serve/test_serve.py",
    "e2e/test_journey.py",
    "e2e/test_user_path.py",
    "reproduce/test_reproduce.py",
    "score/test_score_stream.py",
    "monitor/test_check_drift.py",
    "registry/test_promote.py",
    "e2e/test_mlflow_run.py",
    "core/test_spark.py",
    "train/test_train.py",
    "tune/test_tune_cli.py",
    "score/test_score_batch_cli.py",
    "score/test_score_batch.py",
    "data/test_writing.py",
    "data/test_validation.py",
    "train/test_train_per_group.py",
    "e2e/test_before_spark.py",
    "train/test_train_cli.py",
    "score/test_score_pandas_udf.py",
]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "process: starts a process, cluster or server of its own (not in make test-fast)"
    )
    config.addinivalue_line(
        "markers", "e2e: tests/e2e, the user's path end to end and the bad-input catalogue (not in make test-fast)"
    )


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.path.as_posix()
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith("tests/" + name)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: a module's tests keep their order
    for item in items:
        if "/tests/e2e/" in item.path.as_posix():
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sparkmlops")


@pytest.fixture(scope="session", autouse=True)
def test_environment(workdir):
    """Point MLflow at a real SQLite store in a temp dir and the data cache at a temp dir, for all."""
    import mlflow

    store = workdir / "mlflow.db"
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{store}",
        "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
        "SPARKMLOPS_DATA_CACHE": str(workdir / "data-cache"),
        "PYSPARK_SUBMIT_ARGS": PYSPARK_SUBMIT_ARGS,
        "PYTHONUNBUFFERED": "1",
        "GIT_PYTHON_REFRESH": "quiet",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # MLflow's per-process temp folder (mlflow.pyfunc.spark_udf keeps model copies there), removed by MLflow
    # when the process exits: made here, once, as any process would make it at its first use, so that the
    # in-process entry points' temp-file checks (temp_dir_checked) see only what each run leaves behind.
    from mlflow.utils.file_utils import get_or_create_tmp_dir

    get_or_create_tmp_dir()
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=(workdir / "artifacts").as_uri())
    mlflow.set_experiment(EXPERIMENT)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def spark(test_environment):
    session = get_spark("sparkmlops-tests", master="local[2]", conf=SPARK_CONF)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def default_data(spark) -> str:
    """The embedded generated dataset, created once in the session's cache for every test."""

    return ensure_default_data(spark)


def pinned(name: str) -> str:
    """The version requirements.txt pins for ``name``, read here apart from the code under test."""
    for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines():
        if line.split("==")[0].strip().lower() == name.lower():
            return line.split("==")[1].strip()
    raise KeyError(name)


def require_real_data(path: Path) -> str:
    """The real data's path; without it a test skips on a developer's machine and fails under CI=true
    (CI always has ../shared beside the clone: a skip there would hide a broken path)."""
    if not path.exists():
        message = f"real SF Airbnb data not found at {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: the data must be there)")
        pytest.skip(message)
    return str(path)


@pytest.fixture(scope="session")
def real_data() -> str:
    return require_real_data(REAL_DATA)


@pytest.fixture(scope="session")
def client(test_environment):
    from mlflow import MlflowClient

    return MlflowClient()


def run_entry(args: list[str], cwd: Path = PROJECT_ROOT, env: dict | None = None, timeout: int = 900):
    """Run a command of the project (``python train.py ...``, ``mlflow run ...``); return the result."""
    full_env = entry_env(env)
    started = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    result.seconds = time.perf_counter() - started
    return result


def entry_env(env: dict | None = None) -> dict:
    """The environment a command of the project runs in, as a user's shell would have it."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("MLFLOW_EXPERIMENT_ID", None)  # set by mlflow.set_experiment; MLFLOW_EXPERIMENT_NAME rules
    full_env.pop("MLFLOW_RUN_ID", None)
    if _USER_PYSPARK_PYTHON is None and "PYSPARK_PYTHON" not in (env or {}):
        full_env.pop("PYSPARK_PYTHON", None)
    bin_dir = str(Path(sys.executable).parent)
    full_env["PATH"] = bin_dir + os.pathsep + full_env.get("PATH", "")  # `python` = this environment
    return full_env


@contextlib.contextmanager
def temp_dir_checked(what: str, process_env: dict | None = None):
    """A fresh temporary folder as this process's (``tempfile.tempdir``) and, through TMPDIR, its children's
    for the block, checked to be empty after it: an entry point leaves no temporary files behind, whether
    it succeeds or fails (JVM files go to java.io.tmpdir and are Spark's own)."""
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="sparkmlops-entry-tmp-"))
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(scratch)
    os.environ["TMPDIR"] = str(scratch)
    if process_env is not None:
        process_env["TMPDIR"] = str(scratch)
    try:
        yield scratch
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        # onnxruntime writes one file there when it is imported (its telemetry session, rewritten each time);
        # a pipeline's lock file is kept on purpose (pipeline/exclusive.py: removing it would race a waiter)
        left = sorted(
            str(p.relative_to(scratch))
            for p in scratch.rglob("*")
            if p.name != ".ses" and not (p.name.startswith("sparkmlops-pipeline-") and p.suffix == ".lock")
        )
        shutil.rmtree(scratch, ignore_errors=True)
    assert not left, f"{what} left temporary files behind: {left[:20]}"


def python_script(script: str, *options: str, env: dict | None = None, **kw):
    env = dict(env or {})
    if "TMPDIR" in env:  # the test chose the folder itself
        return run_entry([sys.executable, str(PROJECT_ROOT / script), *options], env=env, **kw)
    with temp_dir_checked(f"python {script}", env):
        return run_entry([sys.executable, str(PROJECT_ROOT / script), *options], env=env, **kw)


def script_in_process(script: str, *options: str):
    """Run a script's click command inside the test process, sharing the session's Spark: the same code
    path as ``python <script>`` (options, validation, tracked run, one-line error, exit code) without a
    new JVM. ``spark_sessions`` counts the sessions the entry point asked the factory for (0: refused
    before Spark). Use ``python_script`` where the separate process matters (signals, environment)."""
    import importlib.util
    import io
    from types import SimpleNamespace

    from sparkmlops.core import jobs

    spec = importlib.util.spec_from_file_location(f"script_{Path(script).stem}", PROJECT_ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err, code, sessions = io.StringIO(), io.StringIO(), 0, []

    def counted_get_spark(*args, **kwargs):
        sessions.append(args)
        return get_spark(*args, **kwargs)

    with (
        temp_dir_checked(f"{script} (in-process)"),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setattr(jobs, "get_spark", counted_get_spark)
        try:
            cli.run(module.main, list(options))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue(), spark_sessions=len(sessions))


GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


def copy_project(destination: Path) -> Path:
    """The project's files (tracked and untracked, not ignored) copied to ``destination``."""
    import shutil

    listed = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "ls-files", "-co", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        if (PROJECT_ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, destination / name)
    return destination


def commit_all(repo: Path, message: str = "project") -> str:
    """Commit everything in ``repo`` (created if needed); the new commit's sha."""
    if not (repo / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(GIT + ["-C", str(repo), "add", "-A"], check=True)
    subprocess.run(GIT + ["-C", str(repo), "commit", "-qm", message], check=True)
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def reproduced_from_this_tree(client, run, tmp_path: Path):
    """`reproduce` of ``run`` as if it had been made from a committed copy of this very tree (its git tags
    pointed at that commit): the reproducing run, once the script has exited 0."""
    project = copy_project(tmp_path / "project")
    client.set_tag(run.info.run_id, "git_commit", commit_all(project))
    client.set_tag(run.info.run_id, "git_dirty", "false")
    result = script_in_process("reproduce.py", "--run_id", run.info.run_id, "--project_uri", str(project))
    assert result.returncode == 0, result.stderr[-3000:]
    [reproduced] = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.reproduction_of = '{run.info.run_id}'"
    )
    return reproduced


def served_model(model_uri: str, log_path: Path):
    """`mlflow models serve -m <model_uri> --env-manager local` on 127.0.0.1 (tools.model_server: a port
    no other process holds, output to ``log_path``, stopped by PID): yields its URL once /ping answers."""
    return model_server.served(model_uri, log_path)


def launched_run_id(result, outcome: str = "succeeded") -> str:
    """The id of the run `mlflow run` launched: MLflow's last "Run (ID ...)" line (reproduce prints its
    nested re-run's line first)."""
    import re

    found = re.findall(rf"Run \(ID '([0-9a-f]+)'\) {outcome}", result.stderr + result.stdout)
    assert found, (result.returncode, result.stdout[-2000:], result.stderr[-4000:])
    return found[-1]


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def runs_of(client, **filters):
    """Runs of the test experiment, newest first."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], **filters)


# What a JVM writes to stderr as it starts (log4j's first lines, Spark's own).
JVM_SIGNS = ("log4j", "SparkContext", "NativeCodeLoader", "Using Spark's default")


def assert_logged_model(
    run_id: str, test_metrics=("rmse", "r2", "mae"), dataset: str | None = "test", name: str = "model"
):
    """The run's model ``name`` is an MLflow 3 logged model: listed by search_logged_models, an output
    of the run, with the run's params and ``test_metrics`` linked to it (measured on ``dataset``), and
    not a run artifact folder. Returns the LoggedModel."""
    import mlflow

    run = mlflow.get_run(run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
    )
    assert name in [m.name for m in models], models
    model = next(m for m in models if m.name == name)
    assert model.model_id in [o.model_id for o in run.outputs.model_outputs]
    assert set(run.data.params) <= set(model.params)
    linked = {m.key: m for m in model.metrics}
    for key in test_metrics:
        assert linked[key].value == pytest.approx(run.data.metrics[key], rel=1e-12), key
        assert linked[key].dataset_name == dataset, key
    assert name not in {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    return model


def assert_refused(result, client, message, before_spark=True):
    """A script refused bad input: exit 2, one `error:` line naming the problem, the run FAILED."""
    assert result.returncode == 2, result.stderr[-3000:]
    line = last_line(result.stderr)
    assert line.startswith("error: ") and message in line, result.stderr[-3000:]
    run = newest_run(client)
    if before_spark:
        # No session asked of the factory (in-process), and none tagged: run_entry_point tags spark_master
        # right after it gets the session. (stderr cannot tell: an in-process run shares the test session's
        # JVM, which logs to fd 2; tests/e2e/test_before_spark.py checks fresh processes.)
        assert getattr(result, "spark_sessions", 0) == 0, "a SparkSession was requested before the refusal"
        assert "spark_master" not in run.data.tags, run.data.tags.get("spark_master")
        if not hasattr(result, "spark_sessions"):  # a process of its own: a JVM would have written to its stderr
            assert not [sign for sign in JVM_SIGNS if sign in result.stderr], result.stderr[-3000:]
    assert run.info.status == "FAILED"
    assert message in run.data.tags["error"]
    return run


def newest_run(client):
    runs = runs_of(client, max_results=1)
    return runs[0] if runs else None


# One trained model of each kind for the whole session (per worker under pytest-xdist): the tests that only
# need some model of that kind share it instead of training their own.


@pytest.fixture(scope="session")
def trained_run(spark, default_data):
    """`train` (10 trees, depth 4) once on the generated data, as the script runs it: (run id, TrainResult)."""
    with tracking.tracked_run("fixture-train") as run:
        result = train_and_log(spark, dataclasses.replace(SHARED_TRAIN_PARAMS, data_path=default_data))
    return run.info.run_id, result


@pytest.fixture(scope="session")
def trained_model(trained_run):
    """The shared Spark model: (runs:/ URI, fitted PipelineModel)."""
    run_id, result = trained_run
    return f"runs:/{run_id}/model", result.model


@pytest.fixture(scope="session")
def sklearn_model(spark, default_data):
    """`train_sklearn` (8 trees, depth 6) once on the generated data: (run id, model URI, result)."""
    params = SklearnTrainParams(data_path=default_data, num_trees=8, max_depth=6)
    run_id, result = in_tracked_run(params, lambda checked: train_sklearn_and_log(spark, checked))
    return run_id, result.model_uri, result


@pytest.fixture(scope="session")
def per_group_run(spark, default_data):
    """`train_per_group` once on the generated data, one model per neighbourhood with at least
    PER_GROUP_MIN_ROWS training rows (about a third of the 36): (run id, result)."""
    params = PerGroupParams(data_path=default_data, min_rows=PER_GROUP_MIN_ROWS, num_trees=5, max_depth=5)
    return in_tracked_run(params, lambda checked: train_per_group_and_log(spark, checked))


@pytest.fixture(scope="session")
def other_trained_model(spark, default_data):
    with tracking.tracked_run("fixture-train-other") as run:
        train_and_log(spark, TrainParams(data_path=default_data, num_trees=3, max_depth=3, seed=1))
    return f"runs:/{run.info.run_id}/model"


@pytest.fixture(scope="session")
def pyfunc_model_uri(test_environment):
    """A model without the Spark flavor."""
    import mlflow

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return [1.0] * len(model_input)

    with mlflow.start_run(run_name="fixture-pyfunc"):
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=["mlflow"])
    return info.model_uri


def in_tracked_run(params, job):
    """Validate ``params`` then run ``job(checked)`` in a tracked run, as the scripts do: (run id, result)."""

    checked = params.validate()
    with tracking.tracked_run("test") as run:
        result = job(checked)
    return run.info.run_id, result


@pytest.fixture
def git_server(tmp_path):
    """The project committed into a bare repo (under subdirectory `project/`), served on 127.0.0.1."""
    work = tmp_path / "work"
    copy_project(work / "project")
    sha = commit_all(work)
    served = tmp_path / "served"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(served / "sparkmlops.git")], check=True)
    subprocess.run(
        ["git", "-C", str(served / "sparkmlops.git"), "config", "uploadpack.allowAnySHA1InWant", "true"], check=True
    )
    port_file = tmp_path / "port"
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("git_http_server.py")), str(served), str(port_file)]
    )
    try:
        deadline = time.time() + 30
        while not port_file.exists():
            assert server.poll() is None and time.time() < deadline, "git server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port_file.read_text()}/sparkmlops.git", sha
    finally:
        server.terminate()  # by PID
        server.wait(timeout=10)
