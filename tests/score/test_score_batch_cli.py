"""score_batch as users run it: bad inputs end in one line and a FAILED run; a kill leaves no output."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import (
    PROJECT_ROOT,
    last_line,
    newest_run,
    python_script,
    script_in_process,
)

from sparkmlops.data import generators


def _refused(result, client, message, before_spark=True):
    assert result.returncode == 2, result.stderr[-3000:]
    assert last_line(result.stderr).startswith("error: ") and message in last_line(result.stderr), \
        result.stderr[-3000:]
    if before_spark:
        assert "log4j" not in result.stderr
    assert newest_run(client).info.status == "FAILED"


def _score(uri, inp, out, *extra, in_process=False):
    run = script_in_process if in_process else python_script
    return run("score_batch.py", "--model_uri", uri, "--input_path", inp, "--output_path", out, *extra)


def test_score_batch_script_end_to_end(client, trained_model, default_data, tmp_path, spark):
    uri, _ = trained_model
    result = _score(uri, default_data, str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert spark.read.parquet(str(tmp_path / "out")).count() == generators.DEFAULT_N_ROWS
    run = newest_run(client)
    assert run.info.status == "FINISHED" and run.data.metrics["rows_scored"] == generators.DEFAULT_N_ROWS
    assert run.data.params["model_uri"] == uri


def test_bad_inputs(client, trained_model, pyfunc_model_uri, default_data, tmp_path):
    uri, _ = trained_model
    out = str(tmp_path / "out")
    _refused(_score("runs:/0123456789abcdef0123456789abcdef/model", default_data, out), client, "not found")
    # The same checks in-process (same code path, no new interpreter each time).
    _refused(_score(pyfunc_model_uri, default_data, out, in_process=True), client, "is not a Spark model", False)
    _refused(_score(uri, str(tmp_path / "missing.parquet"), out, in_process=True), client, "does not exist", False)
    (tmp_path / "empty").mkdir()
    _refused(_score(uri, str(tmp_path / "empty"), out, in_process=True), client, "is an empty folder", False)
    _refused(_score(uri, default_data, out, "--mode", "append", in_process=True), client,
             "mode must be 'error' or 'overwrite'", False)
    (tmp_path / "exists").mkdir()
    _refused(_score(uri, default_data, str(tmp_path / "exists"), in_process=True), client, "already exists", False)
    assert not os.path.exists(out)


def test_schema_mismatch(client, spark, trained_model, default_data, tmp_path):
    uri, _ = trained_model
    spark.read.parquet(default_data).limit(5).drop("latitude").write.parquet(str(tmp_path / "in"))
    result = _score(uri, str(tmp_path / "in"), str(tmp_path / "out"), in_process=True)
    _refused(result, client, "missing columns latitude", before_spark=False)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def large_input(spark, tmp_path_factory):
    folder = tmp_path_factory.mktemp("large") / "in.parquet"
    generators.generate_airbnb(spark, 1_500_000, seed=3, n_partitions=6).write.parquet(str(folder))
    return str(folder)


def test_kill_mid_write_leaves_no_output(trained_model, large_input, tmp_path):
    uri, _ = trained_model
    out = tmp_path / "scored"
    env = {**os.environ}
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    proc = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "score_batch.py"), "--model_uri", uri,
                             "--input_path", large_input, "--output_path", str(out)],
                            # to a file: a pipe nobody reads while polling would fill and block the child
                            cwd=PROJECT_ROOT, env=env, stdout=(tmp_path / "score.log").open("w"),
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        staging = []
        while time.time() < deadline and proc.poll() is None:
            staging = [p for p in tmp_path.iterdir() if ".staging-" in p.name]
            # wait until Spark has started writing part files into the staging folder
            if staging and any(staging[0].rglob("*.parquet")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "scoring finished before it could be killed: use a larger input"
        assert staging, "no staging folder appeared"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
