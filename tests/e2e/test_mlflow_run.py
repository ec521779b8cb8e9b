"""End to end through `mlflow run`: the local project with defaults and -P overrides, bad parameters, real data,
uv environments. A git URL is tests/e2e/test_user_path.py's; the other entry points are the journey's."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, assert_logged_model, newest_run, pinned, run_entry, script_in_process

MLFLOW = str(Path(sys.executable).parent / "mlflow")
BOOK_RMSE = 211.5
SMALL = ["-P", "num_trees=10", "-P", "max_depth=4"]


def mlflow_run(*args, cwd=PROJECT_ROOT, env=None, timeout=900):
    return run_entry([MLFLOW, "run", *args], cwd=cwd, env=env, timeout=timeout)


def run_id_of(result) -> str:
    match = re.search(r"Run \(ID '([0-9a-f]+)'\) succeeded", result.stderr + result.stdout)
    assert match, (result.stdout[-2000:], result.stderr[-4000:])
    return match.group(1)


@pytest.fixture(scope="module")
def local_run(client, default_data):
    result = mlflow_run(".", "--env-manager", "local", *SMALL)
    assert result.returncode == 0, result.stderr[-4000:]
    return client.get_run(run_id_of(result))


def test_local_run_logs_params_metrics_and_tags(local_run, default_data):
    run = local_run
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert {k: params[k] for k in ("num_trees", "max_depth", "max_bins", "seed", "train_fraction", "label_col")} == {
        "num_trees": "10",
        "max_depth": "4",
        "max_bins": "40",
        "seed": "42",
        "train_fraction": "0.8",
        "label_col": "price",
    }
    assert params["data_path"] in ("", "''") and params["data_path_resolved"] == default_data
    assert set(run.data.metrics) >= {"rmse", "r2", "mae", "fit_seconds", "train_rows", "test_rows"}
    assert run.data.metrics["r2"] > 0.3
    tags = run.data.tags
    assert tags["spark_master"] == "local[2]"  # from PYSPARK_SUBMIT_ARGS, not hard-coded
    assert tags["pyspark_version"] == pinned("pyspark") and tags["python_version"].startswith("3.")
    assert tags["mlflow_version"] and tags["java_version"].split(".")[0] in ("17", "21")
    porcelain = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain"], capture_output=True, text=True, check=True
    ).stdout
    assert tags["git_dirty"] == ("true" if porcelain.strip() else "false")  # the tree this test runs in
    assert tags["mlflow.project.entryPoint"] == "main"
    assert tags["data_source"].startswith("generated")
    # named after what it is, not MLflow's random name; the exit code a scheduler cannot see from `mlflow run`
    assert tags["mlflow.runName"] == "train rf 10x4" and tags["exit_code"] == "0"


def test_local_run_logs_datasets_and_artifacts(client, local_run):
    run_id = local_run.info.run_id
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"feature_importance.csv", "feature_importance.png", "predicted_vs_actual.png"} <= names
    assert_logged_model(run_id)  # a run of the `mlflow run` CLI: its params are logged quoted, and linked
    contexts = sorted(
        next(t.value for t in i.tags if t.key == "mlflow.data.context") for i in local_run.inputs.dataset_inputs
    )
    assert contexts == ["testing", "training"]
    assert all(len(i.dataset.digest) == 16 for i in local_run.inputs.dataset_inputs)


def test_unknown_parameter_is_refused(client):
    result = mlflow_run(".", "--env-manager", "local", "-P", "num_tress=5")
    assert result.returncode != 0
    assert "error: unknown parameter 'num_tress' for train" in result.stderr
    run = newest_run(client)
    # refused by click before the entry point starts, and still tagged as every run is (README: exit codes)
    assert run.info.status == "FAILED" and run.data.tags["exit_code"] == "2", run.data.tags
    assert "unknown parameter 'num_tress' for train" in run.data.tags["error"]


def test_bad_parameter_fails_the_run(client):
    result = mlflow_run(".", "--env-manager", "local", "-P", "max_depth=40")
    assert result.returncode != 0
    assert "error: max_depth must be between 0 and 30 (Spark's limit), got 40." in result.stderr
    run = newest_run(client)
    assert run.info.status == "FAILED" and run.data.params["max_depth"] == "40"
    # MLflow's CLI exits 1 for any failed run; the script's own code (2: bad input) is on the run
    assert result.returncode == 1 and run.data.tags["exit_code"] == "2"


def test_real_data_matches_the_book(client, real_data):
    """The book's forest on the real data (train's command in-process: the model is the subject here, the
    process is the other tests')."""
    result = script_in_process(
        "train.py",
        "--data_path",
        real_data,
        "--num_trees",
        "100",
        "--max_depth",
        "5",
        "--max_bins",
        "40",
        "--seed",
        "42",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = client.get_run(re.search(r"run_id=([0-9a-f]{32})", result.stdout).group(1)).data.metrics
    assert abs(metrics["rmse"] - BOOK_RMSE) / BOOK_RMSE <= 0.05, metrics
    assert metrics["train_rows"] + metrics["test_rows"] == 7146


def test_run_with_uv_environment(client, local_run):
    """requirements-dev.txt installs uv next to this Python: no skip, a missing uv fails here. The user's
    --run-name is kept, whatever its shape (it looks like the names MLflow makes up, but is not one)."""
    env = {"PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    result = mlflow_run(".", "--env-manager", "uv", "--run-name", "nightly-retrain-7", *SMALL, env=env, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    run = client.get_run(run_id_of(result))
    assert run.data.metrics["rmse"] == local_run.data.metrics["rmse"]
    assert run.info.run_name == "nightly-retrain-7"
