"""Runs as the user launched them: a name the user gave is kept and only MLflow's own random names are
replaced; a run `mlflow run` created ends FAILED with the `exit_code` and `error` tags however the script
refuses it (click's own refusals included); SIGTERM ends a run KILLED with exit 143."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click
import mlflow
import pytest
import sqlalchemy
from conftest import EXPERIMENT, PROJECT_ROOT, last_line, runs_of, script_in_process

from sparkmlops.core import cli, compat, tracking
from sparkmlops.entry_points import ENTRY_POINTS


def _launched_run(client, name: str | None = None) -> str:
    """A run as `mlflow run` creates it before starting the script (named, or left to MLflow to name)."""
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    return client.create_run(experiment, run_name=name).info.run_id


@pytest.mark.parametrize("given", ["nightly-retrain-7", "train-v2-3", "my model", "A-B-1"])
def test_a_run_name_the_user_gave_is_kept(client, monkeypatch, given):
    run_id = _launched_run(client, given)
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    with tracking.tracked_run("train rf 100x5"):
        pass
    assert client.get_run(run_id).info.run_name == given


def test_only_a_name_mlflow_generated_is_replaced(client, monkeypatch):
    generated = [_launched_run(client) for _ in range(20)]  # MLflow names these itself: "upbeat-gnu-759"
    for run_id in generated:
        name = client.get_run(run_id).info.run_name
        assert compat.is_generated_run_name(name), name
        monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
        with tracking.tracked_run("train rf 100x5"):
            pass
        assert client.get_run(run_id).info.run_name == "train rf 100x5"


ENTRY_POINT_SCRIPTS = [entry_point.script for entry_point in ENTRY_POINTS]


@pytest.mark.parametrize("script", ENTRY_POINT_SCRIPTS)
def test_options_click_refuses_still_end_the_launched_run_with_its_tags(client, monkeypatch, script):
    """Under `mlflow run` the run exists before the script parses its options: an unknown option or a value
    of the wrong type (refused by click, before the entry point starts) leaves it FAILED with the tags every
    run has, as a refusal inside the entry point does (README: exit codes)."""
    assert (PROJECT_ROOT / script).exists()
    for options, message in (
        (["--no_such_option", "1"], "unknown parameter 'no_such_option'"),
        (["--spark_master"], "requires an argument"),
    ):
        run_id = _launched_run(client)
        monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
        result = script_in_process(script, *options)
        assert result.returncode == 2 and message in last_line(result.stderr), result.stderr[-2000:]
        run = client.get_run(run_id)
        assert run.info.status == "FAILED", (script, options)
        assert run.data.tags["exit_code"] == "2" and message in run.data.tags["error"], run.data.tags


def test_a_wrong_type_refused_by_click_ends_the_launched_run(client, monkeypatch):
    run_id = _launched_run(client)
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    result = script_in_process("train.py", "--num_trees", "many")
    assert result.returncode == 2 and "'many' is not a valid integer" in last_line(result.stderr)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["exit_code"] == "2"
    assert "'many' is not a valid integer" in run.data.tags["error"]


@pytest.mark.process
def test_sigterm_ends_a_batch_job_killed_with_143(client, default_data):
    """A scheduler stopping `python train.py` with SIGTERM: the run ends KILLED (not left RUNNING forever),
    tagged exit_code 143, and the process exits 143 with one line."""
    command = [
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        "--data_path",
        default_data,
        "--num_trees",
        "60",
        "--max_depth",
        "14",
        "--seed",
        "3",
    ]  # long enough to be stopped mid-way
    env = {**os.environ}
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    started = time.time()
    proc = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        run = None
        while time.time() - started < 240:  # the job is running once its session is up (tag spark_master)
            runs = runs_of(client, max_results=5, filter_string="tags.entry_point = 'train'")
            run = next(
                (r for r in runs if r.info.start_time >= started * 1000 - 1000 and "spark_master" in r.data.tags), None
            )
            if run is not None or proc.poll() is not None:
                break
            time.sleep(0.2)
        assert run is not None, proc.communicate(timeout=60)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    assert last_line(stderr) == "error: terminated."
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "KILLED" and ended.data.tags["exit_code"] == "143", ended.data.tags


def test_sigterm_during_a_tracking_write_lets_the_write_finish(client, monkeypatch):
    """A SIGTERM that lands inside a write to the tracking store is delivered again once the write has
    committed: the value being logged is there and the run ends KILLED with 143. (Raised mid-write, it once
    left the SQLite store locked, so the run could not be ended: exit 1, "database is locked".)"""
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    signalled, run_ids = [], []

    def signal_inside_the_insert(conn, cursor, statement, *args):
        if not signalled and statement.lstrip().upper().startswith("INSERT INTO PARAMS"):
            signalled.append(statement)
            os.kill(os.getpid(), signal.SIGTERM)

    @click.command()
    def job():
        with tracking.tracked_run("sigterm probe") as run:
            run_ids.append(run.info.run_id)
            mlflow.log_param("written", "yes")
            time.sleep(30)  # the signal, delivered again, ends the job here

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", signal_inside_the_insert)
    started = time.monotonic()
    try:
        with pytest.raises(SystemExit) as exited:
            cli.run(job, [])
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", signal_inside_the_insert)
    assert signalled and exited.value.code == 143 and time.monotonic() - started < 20
    run = client.get_run(run_ids[0])
    assert run.data.params == {"written": "yes"}
    assert run.info.status == "KILLED" and run.data.tags["exit_code"] == "143", run.data.tags
