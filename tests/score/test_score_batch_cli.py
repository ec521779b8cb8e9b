"""score_batch's command: bad inputs end in one line and a FAILED run, refused before Spark where the
files tell; a SIGKILL of its process mid-write leaves no output. (Its run as a process of its own through
`mlflow run` is the journey's.)"""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import PROJECT_ROOT, assert_refused, newest_run, script_in_process

from sparkmlops.data import generators


def _score(uri, inp, out, *extra):
    return script_in_process("score_batch.py", "--model_uri", uri, "--input_path", inp, "--output_path", out, *extra)


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
    assert_refused(_score("runs:/0123456789abcdef0123456789abcdef/model", default_data, out), client, "not found")
    assert_refused(_score(pyfunc_model_uri, default_data, out), client, "has no input signature")
    assert_refused(_score(uri, str(tmp_path / "missing.parquet"), out), client, "does not exist")
    (tmp_path / "empty").mkdir()
    assert_refused(_score(uri, str(tmp_path / "empty"), out), client, "is an empty folder")
    assert_refused(_score(uri, default_data, out, "--mode", "append"), client, "mode must be 'error' or 'overwrite'")
    (tmp_path / "exists").mkdir()
    assert_refused(_score(uri, default_data, str(tmp_path / "exists")), client, "already exists")
    assert not os.path.exists(out)


def test_schema_mismatch(client, spark, trained_model, default_data, tmp_path):
    uri, _ = trained_model
    spark.read.parquet(default_data).limit(5).drop("latitude").write.parquet(str(tmp_path / "in"))
    result = _score(uri, str(tmp_path / "in"), str(tmp_path / "out"))
    assert_refused(result, client, "missing columns latitude", before_spark=False)  # Spark reads the schema
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def large_input(spark, default_data, tmp_path_factory):
    """1.5 million rows (the generated data 210 times), so scoring is still writing when it is killed."""
    folder = tmp_path_factory.mktemp("large") / "in.parquet"
    copies = spark.range(210).withColumnRenamed("id", "copy")
    spark.read.parquet(default_data).crossJoin(copies).drop("copy").repartition(6).write.parquet(str(folder))
    return str(folder)


@pytest.mark.process
def test_kill_mid_write_leaves_no_output(trained_model, large_input, tmp_path):
    uri, _ = trained_model
    out = tmp_path / "scored"
    env = {**os.environ}
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(PROJECT_ROOT / "score_batch.py"),
            "--model_uri",
            uri,
            "--input_path",
            large_input,
            "--output_path",
            str(out),
        ],
        # to a file: a pipe nobody reads while polling would fill and block the child
        cwd=PROJECT_ROOT,
        env=env,
        stdout=(tmp_path / "score.log").open("w"),
        stderr=subprocess.STDOUT,
    )
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
