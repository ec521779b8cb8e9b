"""`make spark-up` / `make spark-down` (``python -m tools.warm_spark up|down``): one warm local Spark Connect
server that entry points in separate processes reuse, giving the results a cold classic session gives.

The server records itself in a discovery file of the test's own (SPARK_LOCAL_CONNECT_DISCOVERY), so a
user's warm server is never touched; it is stopped by its recorded PID at teardown."""

from __future__ import annotations

import os
import re
import signal
import sys
import time

import pytest
from conftest import SHARED_TRAIN_PARAMS, last_line, newest_run, python_script, run_entry, runs_of

from tools import processes

pytestmark = pytest.mark.process

SMALL_MODEL = ["--num_trees", str(SHARED_TRAIN_PARAMS.num_trees), "--max_depth", str(SHARED_TRAIN_PARAMS.max_depth)]


@pytest.fixture(scope="module")
def warm_spark(tmp_path_factory):
    """`make spark-up` on local[2] (the shared model's master): (the environment its users set, its PID)."""
    state = tmp_path_factory.mktemp("warm-spark")
    (state / "tmp").mkdir()
    own = {"SPARK_LOCAL_CONNECT_DISCOVERY": str(state / "connect-local.json"), "SPARK_REMOTE": "local[2]"}
    up = run_entry([sys.executable, "-m", "tools.warm_spark", "up"], env={**own, "TMPDIR": str(state / "tmp")})
    found = re.search(r"\(pid (\d+), master local\[2\]\)", up.stdout)
    assert up.returncode == 0 and found, (up.stdout, up.stderr[-3000:])
    pid = int(found.group(1))
    try:
        yield {**own, "SPARK_LOCAL_CONNECT_REUSE": "1"}, pid
    finally:
        down = run_entry([sys.executable, "-m", "tools.warm_spark", "down"], env=own)
        if processes.running(pid):  # down failed: stop it by its PID all the same
            os.kill(pid, signal.SIGKILL)
    assert down.returncode == 0 and f"warm Spark stopped (pid {pid})" in down.stdout, (down.stdout, down.stderr)
    deadline = time.monotonic() + 30
    while processes.running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes.running(pid)


def test_entry_points_reuse_the_warm_server_and_get_the_cold_results(
    warm_spark, trained_run, client, default_data, tmp_path
):
    env, pid = warm_spark
    cold = client.get_run(trained_run[0])  # the shared model: the same training in a classic session

    # the pipeline (train, register, promote, score) over the warm server
    scores = tmp_path / "scores"
    chain = ["--data_path", default_data, *SMALL_MODEL, "--register_as", "warm_price"]
    chain += ["--score_input_path", default_data, "--score_output_path", str(scores)]
    piped = python_script("pipeline.py", *chain, env=env)
    assert piped.returncode == 0, piped.stderr[-3000:]
    parent = runs_of(client, filter_string="tags.entry_point = 'pipeline'", max_results=1)[0]
    assert parent.data.tags["spark_master"] == "local[2] (server master local[2])"
    step_runs = {s: client.get_run(parent.data.tags[f"step.{s}.run_id"]) for s in ("train", "score_batch")}
    assert step_runs["score_batch"].data.metrics["rows_scored"] == 7146
    assert client.get_model_version_by_alias("warm_price", "champion").run_id == step_runs["train"].info.run_id

    # a second process, the same server: train alone
    trained = python_script("train.py", "--data_path", default_data, *SMALL_MODEL, env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    warm = newest_run(client)
    assert warm.data.tags["spark_master"] == "local[2] (server master local[2])"
    for metric in ("rmse", "mae", "r2", "train_rows", "test_rows"):
        assert warm.data.metrics[metric] == cold.data.metrics[metric] == step_runs["train"].data.metrics[metric]

    # still the one server `up` started, and an entry point that needs a SparkContext says so in one line
    refused = python_script("tune_grid.py", "--data_path", default_data, env=env)
    assert refused.returncode == 2 and "which Spark Connect does not provide" in last_line(refused.stderr)
    assert processes.running(pid)
    again = run_entry([sys.executable, "-m", "tools.warm_spark", "up"], env=env)
    assert again.returncode == 0 and f"(pid {pid}, " in again.stdout, again.stdout
