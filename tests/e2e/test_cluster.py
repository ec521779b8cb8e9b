"""Entry points on a real Spark standalone cluster (a master and two workers) and over Spark Connect,
compared with local mode, plus the checks that refuse a bad or unsupported master before Spark starts.

One module-scoped fixture starts the cluster and a Connect server from the pyspark package on
127.0.0.1 (each daemon binds a free port itself, so other Spark processes on the machine and parallel
test workers do not matter) and stops them by PID when this module is done.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sparkmlops.data.writing import write_parquet_atomically
from tests.conftest import (
    JVM_OPTIONS,
    PROJECT_ROOT,
    SPARK_CONF,
    assert_refused,
    last_line,
    newest_run,
    python_script,
    run_entry,
    script_in_process,
)
from tools import local_cluster

SMALL_MODEL = ["--num_trees", "10", "--max_depth", "4"]  # the trained_model fixture's parameters
QUIET_CONF = " ".join(f"--conf {k}={shlex.quote(v)}" for k, v in SPARK_CONF.items() if k != "spark.driver.memory")


@pytest.fixture(scope="module")
def spark_cluster(workdir):
    """A standalone master, two 1-core workers and a Spark Connect server (local[2]), all on 127.0.0.1."""

    cluster = local_cluster.Cluster(
        state_dir=str(workdir / "cluster"),
        master_port=0,
        master_ui_port=0,
        worker_ui_ports=[0, 0],
        connect=True,
        connect_port=0,
        java_options=JVM_OPTIONS,
    )
    local_cluster.start(cluster, workers=2, timeout=180)
    pids = dict(cluster.pids)
    yield cluster
    # Stopped the way `make cluster-down` stops it: by the PIDs recorded at start.
    result = subprocess.run(
        [sys.executable, "-m", "tools.local_cluster", "down", "--state-dir", cluster.state_dir],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for pid in pids.values():  # they are this process's children: reap them
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    still_running = [
        name
        for name, pid in pids.items()
        if Path(f"/proc/{pid}").exists()
        and "java" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    ]
    assert not still_running, f"{still_running} survived cluster-down"


def standalone_env(cluster, **extra) -> dict:
    """A driver on this machine using the standalone master: driver bound to 127.0.0.1, executors
    started with this Python."""
    return {"SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable, **extra}


def assert_same_rows(spark, output_path: str, expected_df):
    """The scored output holds exactly the expected rows and predictions (as multisets)."""
    output = spark.read.parquet(output_path)
    assert "prediction" in output.columns and set(output.columns) <= set(expected_df.columns)
    expected_df = expected_df.select(*output.columns)  # score_stream keeps the model's columns only
    assert output.count() == expected_df.count()
    assert output.exceptAll(expected_df).count() == 0
    assert expected_df.exceptAll(output).count() == 0


@pytest.fixture(scope="module")
def local_predictions(spark, default_data, trained_model):
    data = spark.read.parquet(default_data)
    return trained_model[1].transform(data).select(*data.columns, "prediction")


@pytest.fixture(scope="module")
def fixture_run(client, trained_model):
    return client.get_run(trained_model[0].split("/")[1])


# --- standalone cluster -------------------------------------------------------------------------------


def conf_dir_env(cluster) -> dict:
    """What `source .cluster/env.sh` sets after `make cluster-up`: SPARK_CONF_DIR (its spark-defaults.conf
    names the master and the executors' Python) and SPARK_LOCAL_IP; no PYSPARK_PYTHON, no --master."""
    return {**cluster.env(), "PYSPARK_SUBMIT_ARGS": f"{QUIET_CONF} pyspark-shell"}


@pytest.fixture(scope="module")
def standalone_train(spark_cluster, default_data, client):
    """train on the cluster, its master from spark-defaults.conf in SPARK_CONF_DIR (what cluster-up writes)."""
    result = python_script("train.py", "--data_path", default_data, *SMALL_MODEL, env=conf_dir_env(spark_cluster))
    assert result.returncode == 0, result.stderr[-3000:]
    return newest_run(client)


def test_train_on_standalone_cluster_equals_local(standalone_train, fixture_run, spark_cluster):
    run = standalone_train
    assert run.info.status == "FINISHED"
    assert run.data.tags["spark_master"] == spark_cluster.master_url
    for metric in ("rmse", "mae", "r2", "train_rows", "test_rows"):
        assert run.data.metrics[metric] == fixture_run.data.metrics[metric], metric  # bit-identical
    assert run.data.tags["data_digest"] == fixture_run.data.tags["data_digest"]
    assert dataset_digests(run) == dataset_digests(fixture_run)  # the same train and test rows


def dataset_digests(run) -> dict:
    return {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}


def test_score_batch_on_standalone_cluster_equals_local(
    spark_cluster, standalone_train, default_data, spark, local_predictions, tmp_path, client
):
    """The cluster-trained model, scored on the cluster (launched with spark-submit --master), predicts
    what the locally trained one predicts locally."""

    output = tmp_path / "scored"
    result = run_entry(
        [
            str(local_cluster.spark_home() / "bin" / "spark-submit"),
            "--master",
            spark_cluster.master_url,
            *shlex.split(QUIET_CONF),
            str(PROJECT_ROOT / "score_batch.py"),
            "--model_uri",
            f"runs:/{standalone_train.info.run_id}/model",
            "--input_path",
            default_data,
            "--output_path",
            str(output),
        ],
        env=standalone_env(spark_cluster, PYSPARK_SUBMIT_ARGS=""),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert newest_run(client).data.tags["spark_master"] == spark_cluster.master_url
    assert_same_rows(spark, str(output), local_predictions)


def test_stream_and_pandas_udf_on_standalone_cluster(
    spark_cluster, trained_model, sklearn_model, spark, default_data, tmp_path, client, local_predictions
):
    """score_stream (spark_master parameter) and score_pandas_udf (spark-defaults.conf) run on the
    executors of the cluster and give local mode's predictions."""

    stream_input = tmp_path / "incoming"
    write_parquet_atomically(spark.read.parquet(default_data).repartition(3), str(stream_input))
    result = python_script(
        "score_stream.py",
        "--model_uri",
        trained_model[0],
        "--input_path",
        str(stream_input),
        "--output_path",
        str(tmp_path / "stream_out"),
        "--checkpoint_path",
        str(tmp_path / "checkpoint"),
        "--max_files_per_trigger",
        "1",
        "--spark_master",
        spark_cluster.master_url,
        env=standalone_env(spark_cluster),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = newest_run(client)
    assert run.data.tags["spark_master"] == spark_cluster.master_url
    assert run.data.metrics["batches"] == 3
    assert_same_rows(spark, str(tmp_path / "stream_out"), local_predictions)

    # Python tasks on the executors, with the Python spark-defaults.conf names (no PYSPARK_PYTHON set).
    _, sklearn_uri, _ = sklearn_model
    result = python_script(
        "score_pandas_udf.py",
        "--model_uri",
        sklearn_uri,
        "--input_path",
        default_data,
        "--output_path",
        str(tmp_path / "pandas_out"),
        env=conf_dir_env(spark_cluster),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = newest_run(client)
    assert run.data.tags["spark_master"] == spark_cluster.master_url
    assert run.data.metrics["rows_scored"] == 7146
    import mlflow

    scored = spark.read.parquet(str(tmp_path / "pandas_out")).toPandas()
    expected = mlflow.pyfunc.load_model(sklearn_uri).predict(scored.drop(columns=["prediction"]))
    assert (scored["prediction"].to_numpy() == expected).all()


# --- Spark Connect ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def connect_train(spark_cluster, default_data, client):
    result = python_script(
        "train.py", "--data_path", default_data, *SMALL_MODEL, env={"SPARK_REMOTE": spark_cluster.remote_url}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return newest_run(client)


def test_train_over_connect_logs_a_standard_spark_model(
    connect_train, fixture_run, spark_cluster, spark, default_data, local_predictions
):
    import mlflow
    from mlflow.models import Model

    run = connect_train
    assert run.info.status == "FINISHED"
    assert run.data.tags["spark_master"] == f"{spark_cluster.remote_url} (server master local[2])"
    for metric in ("rmse", "mae", "r2", "train_rows", "test_rows"):
        assert run.data.metrics[metric] == fixture_run.data.metrics[metric], metric
    model_uri = f"runs:/{run.info.run_id}/model"
    local = mlflow.artifacts.download_artifacts(model_uri)
    flavors = Model.load(local).flavors
    assert flavors["spark"]["model_data"] == "sparkml"
    assert flavors["python_function"]["loader_module"] == "mlflow.spark"
    assert Model.load(local).signature is not None
    assert (Path(local) / "input_example.json").exists()
    # mlflow.spark's layout: a classic session loads it with mlflow.spark and predicts the same.
    data = spark.read.parquet(default_data)
    reloaded = mlflow.spark.load_model(model_uri).transform(data).select(*data.columns, "prediction")
    assert reloaded.exceptAll(local_predictions).count() == 0


def test_score_batch_over_connect_equals_local(
    spark_cluster, connect_train, default_data, spark, tmp_path, client, local_predictions
):
    """The Connect-trained model scored over Connect (spark_master=sc://...) predicts what local mode does;
    the output is written atomically without a JVM on the client."""
    output = tmp_path / "scored"
    result = python_script(
        "score_batch.py",
        "--model_uri",
        f"runs:/{connect_train.info.run_id}/model",
        "--input_path",
        default_data,
        "--output_path",
        str(output),
        "--spark_master",
        spark_cluster.remote_url,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = newest_run(client)
    assert run.data.tags["spark_master"].startswith(spark_cluster.remote_url)
    assert run.data.metrics["rows_scored"] == 7146 and run.data.tags["input_digest"]
    assert_same_rows(spark, str(output), local_predictions)
    assert [p.name for p in tmp_path.iterdir()] == ["scored"]  # no staging folder left
    # An existing output is refused, as in local mode.
    again = python_script(
        "score_batch.py",
        "--model_uri",
        f"runs:/{connect_train.info.run_id}/model",
        "--input_path",
        default_data,
        "--output_path",
        str(output),
        "--spark_master",
        spark_cluster.remote_url,
    )
    assert again.returncode == 2 and "already exists" in last_line(again.stderr)


def test_score_stream_over_connect(
    spark_cluster, trained_model, spark, default_data, tmp_path, client, local_predictions
):

    stream_input = tmp_path / "incoming"
    write_parquet_atomically(spark.read.parquet(default_data).repartition(2), str(stream_input))
    result = python_script(
        "score_stream.py",
        "--model_uri",
        trained_model[0],
        "--input_path",
        str(stream_input),
        "--output_path",
        str(tmp_path / "out"),
        "--checkpoint_path",
        str(tmp_path / "ckpt"),
        "--max_files_per_trigger",
        "1",
        env={"SPARK_REMOTE": spark_cluster.remote_url},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = newest_run(client)
    assert run.data.metrics["batches"] == 2 and run.data.metrics["rows_scored"] == 7146
    assert_same_rows(spark, str(tmp_path / "out"), local_predictions)


# --- the master's checks, before Spark starts -----------------------------------------------------------


@pytest.mark.parametrize("script", ["tune_hyperopt.py", "score_pandas_udf.py", "train_per_group.py"])
def test_entry_points_needing_a_spark_context_refuse_connect(
    script, client, default_data, trained_model, tmp_path, monkeypatch
):
    options = {
        "tune_hyperopt.py": ["--data_path", default_data],
        "score_pandas_udf.py": [
            "--model_uri",
            trained_model[0],
            "--input_path",
            default_data,
            "--output_path",
            str(tmp_path / "out"),
        ],
        "train_per_group.py": ["--data_path", default_data],
    }[script]
    monkeypatch.setenv("SPARK_REMOTE", "sc://127.0.0.1:1")  # no server needed: refused before any session
    result = script_in_process(script, *options)
    assert_refused(result, client, "which Spark Connect does not provide")


def test_malformed_master_is_refused_before_spark(client):
    result = script_in_process("train.py", "--spark_master", "spark:/host:7077")
    assert_refused(result, client, "spark_master 'spark:/host:7077' is not a Spark master URL")


def test_master_contradicting_spark_remote_is_refused(client, monkeypatch):
    monkeypatch.setenv("SPARK_REMOTE", "sc://127.0.0.1:1")
    result = script_in_process("train.py", "--spark_master", "local[2]")
    assert_refused(result, client, "spark_master is 'local[2]' but SPARK_REMOTE is 'sc://127.0.0.1:1'")


@pytest.mark.parametrize(
    "output", ["s3://bucket/scored", "s3a://bucket/scored", "gs://bucket/scored", "hdfs://namenode:8020/scored"]
)
def test_an_output_connect_cannot_move_into_place_is_refused_before_spark(output, client, trained_model, default_data):
    """A Connect client moves its output into place itself, and has neither Hadoop's API (no JVM) nor a
    way to move folders on object stores: such an output is refused in a second, before any work."""
    result = script_in_process(
        "score_batch.py",
        "--model_uri",
        trained_model[0],
        "--input_path",
        default_data,
        "--output_path",
        output,
        "--spark_master",
        "sc://127.0.0.1:1",
    )
    assert_refused(result, client, f"output '{output}' cannot be written over Spark Connect")
