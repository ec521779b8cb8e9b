"""tune_hyperopt.py and tune_grid.py as users run them (their click commands, in-process): bad input refused
before Spark, a real search end to end, and its parent run's model scored by score_batch."""

import json
import re
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import (
    PROJECT_ROOT,
    assert_logged_model,
    assert_refused,
    last_line,
    launched_run_id,
    run_entry,
    runs_of,
    script_in_process,
)

from sparkmlops.core.errors import UserInputError
from sparkmlops.tune.search import TuneParams
from sparkmlops.tune.tune_grid import GridParams


@pytest.mark.parametrize(
    "params, message",
    [
        (TuneParams(max_evals=0), "max_evals must be >= 1"),
        (TuneParams(parallelism=0), "parallelism must be between 1 and 128"),
        (TuneParams(engine="sklearn", parallelism=129), "parallelism must be between 1 and 128"),
        (TuneParams(engine="xgboost"), "unknown engine 'xgboost'"),
        (TuneParams(metric="mape"), "unknown metric 'mape'"),
        (TuneParams(parallelism=2), "parallelism applies to engine=sklearn"),
        (TuneParams(timeout_seconds=-5), "timeout_seconds must be >= 0"),
        (TuneParams(early_stop_trials=-1), "early_stop_trials must be >= 0"),
        (TuneParams(search_space="huge"), "unknown search_space 'huge'"),
        (TuneParams(train_fraction=1.0), "train_fraction must be strictly between 0 and 1"),
        (TuneParams(label_col=""), "label_col is empty"),
        (TuneParams(data_path="/no/such/listings.parquet"), "'/no/such/listings.parquet' does not exist"),
        (GridParams(param_grid="{num_trees: [1]}"), "param_grid is not valid JSON"),
        (GridParams(param_grid="[1, 2]"), "param_grid must be a non-empty JSON object of lists"),
        (GridParams(param_grid='{"trees": [10]}'), "param_grid has unknown parameter 'trees'"),
        (GridParams(param_grid='{"num_trees": 10}'), "param_grid['num_trees'] must be a non-empty list"),
        (GridParams(param_grid='{"num_trees": [0]}'), "param_grid['num_trees'] values must be integers >= 1"),
        (GridParams(param_grid='{"max_depth": [-1]}'), "param_grid['max_depth'] values must be integers >= 0"),
        (GridParams(param_grid='{"log_label": ["yes"]}'), "param_grid['log_label'] values must be true or false"),
        (GridParams(param_grid='{"max_features": ["most"]}'), "max_features 'most' is not valid"),
        (
            GridParams(param_grid=json.dumps({"num_trees": list(range(1, 200)), "max_depth": list(range(60))})),
            "param_grid has 11940 candidates",
        ),
        (GridParams(cv=1), "cv must be >= 2"),
        (GridParams(parallelism=0), "parallelism must be between 1 and 128"),
        (GridParams(metric="mape"), "unknown metric 'mape'"),
    ],
)
def test_parameter_checks(params, message):
    with pytest.raises(UserInputError, match=re.escape(message)):
        params.validate()


@pytest.mark.parametrize(
    "script, options, message",
    [
        ("tune_hyperopt.py", ["--max_evals", "0"], "max_evals must be >= 1"),
        ("tune_hyperopt.py", ["--engine", "xgboost"], "unknown engine 'xgboost'"),
        (
            "tune_hyperopt.py",
            ["--data_path", "/no/such/listings.parquet"],
            "'/no/such/listings.parquet' does not exist",
        ),
        ("tune_optuna.py", ["--parallelism", "0"], "parallelism must be between 1 and 128"),
        ("tune_grid.py", ["--param_grid", '{"trees": [10]}'], "param_grid has unknown parameter 'trees'"),
        ("tune_grid.py", ["--cv", "1"], "cv must be >= 2"),
    ],
)
def test_scripts_refuse_bad_input_before_spark(client, script, options, message):
    assert_refused(script_in_process(script, *options), client, message)  # no spark_master tag: no session


def test_unknown_parameter_is_refused():
    result = script_in_process("tune_hyperopt.py", "--max_depth", "5")
    assert result.returncode == 2
    assert "unknown parameter 'max_depth' for tune_hyperopt: valid parameters are" in last_line(result.stderr)


def test_bad_data_fails_the_run(client, tmp_path):
    bad = tmp_path / "garbage.parquet"
    bad.write_text("not parquet\n")
    result = script_in_process("tune_hyperopt.py", "--data_path", str(bad), "--max_evals", "1")
    assert_refused(result, client, "cannot be read as parquet", before_spark=False)


@pytest.fixture(scope="module")
def small_data(spark, default_data, tmp_path_factory) -> str:
    """1,500 rows: the default search space's deepest forests then take seconds, not minutes."""
    path = str(tmp_path_factory.mktemp("tune-cli") / "small.parquet")
    spark.read.parquet(default_data).limit(1500).coalesce(1).write.parquet(path)
    return path


def test_tune_hyperopt_end_to_end_then_score_the_parent_run(spark, client, small_data, tmp_path):
    result = script_in_process(
        "tune_hyperopt.py",
        "--data_path",
        small_data,
        "--max_evals",
        "2",
        "--search_space",
        "smoke",
        "--register_as",
        "tune-test-price",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = last_line(result.stdout)
    assert line.startswith("tune_hyperopt: best {") and "best_run_id=" in line
    parent_id = line.split(" run_id=")[1].split()[0]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.params["engine"] == "mllib"
    children = runs_of(client, filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 2 and parent.data.tags["best_run_id"] in {c.info.run_id for c in children}
    assert "search_space.json" in {a.path for a in client.list_artifacts(parent_id)}
    # The refit best model is registered, tagged with the search's run and its best parameters.
    version = client.get_model_version("tune-test-price", "1")
    assert version.run_id == parent_id and version.tags["entry_point"] == "tune_hyperopt"
    best = {k[len("best_") :]: v for k, v in parent.data.params.items() if k.startswith("best_")}
    assert best and {f"param.{k}": v for k, v in best.items()}.items() <= version.tags.items()
    assert float(version.tags["metric.rmse"]) == pytest.approx(parent.data.metrics["rmse"], rel=1e-5)

    # score_batch takes the parent run's model, as it takes train's.
    from conftest import in_tracked_run

    from sparkmlops.score.score_batch import BatchParams, predict_batch

    out = str(tmp_path / "scored")
    params = BatchParams(f"runs:/{parent_id}/model", small_data, out)
    _, summary = in_tracked_run(params, lambda model: predict_batch(spark, params, model))
    scored = spark.read.parquet(out)
    assert summary["rows_scored"] == scored.count() == 1500
    assert scored.filter("prediction IS NULL OR isnan(prediction)").count() == 0


@pytest.mark.process
def test_tune_optuna_through_the_mlflow_run_cli(client, small_data):
    """Where a user starts: `mlflow run -e tune_optuna` with -P overrides, trials on the executors."""
    result = run_entry(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "run",
            ".",
            "-e",
            "tune_optuna",
            "--env-manager",
            "local",
            "-P",
            f"data_path={small_data}",
            "-P",
            "max_evals=3",
            "-P",
            "engine=sklearn",
            "-P",
            "search_space=wide",
            "-P",
            "early_stop_trials=5",
        ],
        cwd=PROJECT_ROOT,
    )
    parent_id = launched_run_id(result)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["mlflow.project.entryPoint"] == "tune_optuna"
    assert parent.data.tags["exit_code"] == "0" and parent.data.tags["optuna.study_direction"] == "MINIMIZE"
    children = runs_of(client, filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(c.info.run_name for c in children) == ["trial-000", "trial-001", "trial-002"]
    assert parent.data.tags["best_run_id"] in {c.info.run_id for c in children}
    assert_logged_model(parent_id)  # its params logged by `mlflow run` (quoted) and by the script
    # -P search_space=wide reached the search: its space has the all-features corner
    space = json.loads(
        Path(mlflow.artifacts.download_artifacts(run_id=parent_id, artifact_path="search_space.json")).read_text()
    )
    assert "1.0" in space["max_features"][1] and space["num_trees"][2] == 200
