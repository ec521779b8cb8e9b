"""Where users start: runs launched by the `mlflow run` CLI (defaults, -P overrides, a git URL) and by
``mlflow.projects.run``, then reproduced by `mlflow run -e reproduce` and by ``python reproduce.py``;
tune_grid's searchable parameters; run names."""

from __future__ import annotations

import re
import sys

import pytest
from conftest import (
    commit_all,
    copy_project,
    last_line,
    launched_run_id,
    run_entry,
    runs_of,
    script_in_process,
)
from test_mlflow_run import MLFLOW

SMALL = ["-P", "num_trees=5", "-P", "max_depth=3"]


@pytest.fixture(scope="module")
def odd_data(spark, tmp_path_factory) -> str:
    """2,000 generated rows under a path with spaces and quotes, as users' paths are."""
    from sparkmlops.data.generators import generate_airbnb
    from sparkmlops.data.writing import write_parquet_atomically

    path = tmp_path_factory.mktemp("user-path") / "my listings" / 'it\'s "july".parquet'
    path.parent.mkdir(parents=True)
    write_parquet_atomically(generate_airbnb(spark, 2000, 42, n_partitions=1), str(path))
    return str(path)


def _reproduction_of(client, run_id: str):
    original = client.get_run(run_id)
    [reproduced] = client.search_runs([original.info.experiment_id], filter_string=f"tags.reproduction_of = '{run_id}'")
    return original, reproduced


def _assert_reproduced(client, run_id: str) -> None:
    original, reproduced = _reproduction_of(client, run_id)
    assert reproduced.info.status == "FINISHED", reproduced.data.tags.get("error")
    for name in ("rmse", "mae", "r2", "train_rows", "test_rows"):
        assert reproduced.data.metrics[name] == original.data.metrics[name], name
    assert reproduced.data.params == {k: v for k, v in original.data.params.items()}  # same values, same quoting
    assert reproduced.data.tags["data_digest"] == original.data.tags["data_digest"]
    assert reproduced.data.tags["reproduction_verdict"].startswith("reproduced:")


def test_mlflow_run_from_a_git_url_with_defaults_is_reproduced_by_mlflow_run(client, git_server, odd_data, tmp_path):
    """`mlflow run <url>#project --version <sha> -P data_path=... -P num_trees=...` (register_as and spark_master
    left at their empty defaults, which MLflow logs as ''), then `mlflow run <url> -e reproduce`: the same code,
    parameters and data fetched again give bit-identical metrics."""
    url, sha = git_server
    launched = run_entry(
        [
            MLFLOW,
            "run",
            f"{url}#project",
            "--version",
            sha,
            "--env-manager",
            "local",
            "-P",
            f"data_path={odd_data}",
            *SMALL,
        ],
        cwd=tmp_path,
    )
    run_id = launched_run_id(launched)
    run = client.get_run(run_id)
    assert run.data.params["spark_master"] == "''" and run.data.params["register_as"] == "''"  # MLflow's quoting
    assert run.data.params["num_trees"] == "5" and run.data.params["max_depth"] == "3"  # the -P overrides
    assert run.data.tags["mlflow.runName"] == "train rf 5x3"
    assert run.data.tags["git_subdirectory"] == "project"
    assert run.data.tags["mlflow.source.git.commit"] == sha  # --version
    assert run.data.tags["git_commit"] == sha and run.data.tags["git_dirty"] == "false"  # MLflow's clean checkout

    result = run_entry(
        [
            MLFLOW,
            "run",
            f"{url}#project",
            "--version",
            sha,
            "--env-manager",
            "local",
            "-e",
            "reproduce",
            "-P",
            f"run_id={run_id}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    _assert_reproduced(client, run_id)
    reproduce_run = client.get_run(launched_run_id(result))
    assert reproduce_run.data.tags["mlflow.runName"] == f"reproduce {run_id[:8]}"
    assert reproduce_run.data.tags["exit_code"] == "0"


def test_mlflow_projects_run_is_reproduced_by_the_script(client, odd_data, tmp_path):
    """A run launched from Python with mlflow.projects.run (typed parameters), reproduced with
    `python reproduce.py` from the committed checkout."""
    work = copy_project(tmp_path / "work")
    commit_all(work)
    launch = (
        "import mlflow, sys; r = mlflow.projects.run(sys.argv[1], entry_point='train', env_manager='local', "
        "parameters={'data_path': sys.argv[2], 'num_trees': 5, 'max_depth': 3, 'log_label': 'true'}); "
        "print('run_id=' + r.run_id)"
    )
    launched = run_entry([sys.executable, "-c", launch, str(work), odd_data], cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr[-4000:]
    run_id = re.search(r"run_id=([0-9a-f]{32})", launched.stdout).group(1)
    assert client.get_run(run_id).data.tags["mlflow.runName"] == "train rf 5x3 log"

    result = run_entry([sys.executable, str(work / "reproduce.py"), "--run_id", run_id], cwd=work)
    assert result.returncode == 0, result.stderr[-5000:]
    assert re.match(r"reproduce: reproduced: \d+ metrics bit-identical", last_line(result.stdout))
    _assert_reproduced(client, run_id)


def test_run_parameters_undo_mlflow_run_quoting():
    """Every value MLflow's CLI quotes comes back as the script received it."""
    import shlex
    from types import SimpleNamespace

    from sparkmlops.core import tracking

    values = {
        "empty": "",
        "spaces": '/data/my listings/it\'s "q".parquet',
        "json": '{"num_trees": [50, 100]}',
        "plain": "price",
        "number": "0.8",
    }
    quoted = {k: shlex.quote(v) for k, v in values.items()}
    project_run = SimpleNamespace(
        data=SimpleNamespace(
            params={**quoted, "data_path_resolved": "/a/it's b"}, tags={"mlflow.project.entryPoint": "train"}
        )
    )
    assert tracking.run_parameters(project_run) == {**values, "data_path_resolved": "/a/it's b"}
    script_run = SimpleNamespace(data=SimpleNamespace(params={"register_as": "''"}, tags={}))
    assert tracking.run_parameters(script_run) == {"register_as": "''"}  # a script logs what it got


def _newest_tune_grid_run(client):
    return runs_of(client, filter_string="tags.entry_point = 'tune_grid'", max_results=1)[0]  # not a candidate


def test_tune_grid_searches_model_type_and_refuses_what_the_estimator_does_not_take(client, default_data):
    result = script_in_process(
        "tune_grid.py",
        "--data_path",
        default_data,
        "--cv",
        "2",
        "--parallelism",
        "1",
        "--param_grid",
        '{"model_type": ["gbt", "rf"], "num_trees": [5], "max_depth": [3]}',
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = _newest_tune_grid_run(client)
    assert run.info.status == "FINISHED" and run.data.params["best_model_type"] in ("gbt", "rf")
    assert run.data.metrics["candidates"] == 2
    assert run.data.tags["mlflow.runName"] == "tune_grid 2-fold auto"
    assert run.data.params["resolved_metric"] == "rmse"

    for grid, message in [
        ('{"model_type": ["xgb"]}', "model_type'] values must be one of rf, gbt"),
        (
            '{"numTrees": [5]}',
            "unknown parameter 'numTrees': use impute, log_label, max_depth, max_features, min_samples_leaf, "
            "model_type, num_trees.",
        ),
        ('{"model_type": ["gbt"], "max_features": ["sqrt"]}', "candidate"),
    ]:
        result = script_in_process("tune_grid.py", "--data_path", default_data, "--param_grid", grid)
        assert result.returncode == 2 and message in last_line(result.stderr), result.stderr[-2000:]
        run = _newest_tune_grid_run(client)
        assert run.info.status == "FAILED" and "spark_master" not in run.data.tags  # refused before Spark
