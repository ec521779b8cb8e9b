"""Streaming scoring: exactly once over 100-file inputs, crash and restart, graceful stop, checkpoints."""

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from conftest import (
    JVM_SIGNS,
    PROJECT_ROOT,
    REAL_DATA_100P,
    assert_refused,
    in_tracked_run,
    last_line,
    newest_run,
    python_script,
    require_real_data,
    script_in_process,
)

from sparkmlops.core.errors import UserInputError
from sparkmlops.data import digests, generators
from sparkmlops.inference import resolve
from sparkmlops.score.score_stream import StreamParams, run_stream


def _expected_digest(spark, pipeline, input_path, columns):
    source = spark.read.parquet(input_path)
    return digests.content_digest(pipeline.transform(source).select(*columns, "prediction"))


def _sink_digest(spark, output_path, columns):
    return digests.content_digest(spark.read.parquet(output_path).select(*columns, "prediction"))


@pytest.fixture(scope="module")
def generated_100_files(spark, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream-in") / "files"
    generators.generate_airbnb(spark, 3000, seed=11, n_partitions=100).write.parquet(str(folder))
    return str(folder)


def _stream(spark, params):
    return in_tracked_run(params, lambda model: run_stream(spark, params, model))


def test_generated_100_files_exactly_once(spark, client, trained_model, generated_100_files, tmp_path):
    uri, pipeline = trained_model
    params = StreamParams(
        uri, generated_100_files, str(tmp_path / "out"), str(tmp_path / "ckpt"), max_files_per_trigger=25
    )
    run_id, summary = _stream(spark, params)
    columns = [c for c, _ in resolve.resolve_model(uri).input_columns()]
    assert spark.read.parquet(str(tmp_path / "out")).count() == 3000
    assert _sink_digest(spark, str(tmp_path / "out"), columns) == _expected_digest(
        spark, pipeline, generated_100_files, columns
    )
    assert summary["batches"] == 4 and summary["rows_scored"] == 3000
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run_id, "batch_rows")
    assert sorted(m.step for m in history) == [0, 1, 2, 3] and sum(m.value for m in history) == 3000
    # a second run of the same command finds nothing new: still exactly once
    _, again = _stream(spark, params)
    assert again["rows_scored"] == 0 and spark.read.parquet(str(tmp_path / "out")).count() == 3000


def test_real_100_files_with_extra_zipcode(spark, trained_model, tmp_path):
    require_real_data(REAL_DATA_100P)
    uri, pipeline = trained_model
    from sparkmlops.inference.resolve import resolve_model

    columns = [c for c, _ in resolve_model(uri).input_columns()]
    params = StreamParams(
        uri, str(REAL_DATA_100P), str(tmp_path / "out"), str(tmp_path / "ckpt"), max_files_per_trigger=20
    )
    _, summary = _stream(spark, params)
    sink = spark.read.parquet(str(tmp_path / "out"))
    assert "zipcode" not in sink.columns
    assert sink.count() == 7146 == summary["rows_scored"]
    assert _sink_digest(spark, str(tmp_path / "out"), columns) == _expected_digest(
        spark, pipeline, str(REAL_DATA_100P), columns
    )


def test_checkpoint_of_another_model_is_refused(
    trained_model, other_trained_model, generated_100_files, spark, tmp_path
):
    uri, _ = trained_model
    params = StreamParams(
        uri, generated_100_files, str(tmp_path / "out"), str(tmp_path / "ckpt"), max_files_per_trigger=50
    )
    _stream(spark, params)
    other = StreamParams(other_trained_model, generated_100_files, str(tmp_path / "out"), str(tmp_path / "ckpt"))
    with pytest.raises(UserInputError, match="belongs to another stream: it was made for model"):
        other.validate()
    moved = StreamParams(uri, generated_100_files, str(tmp_path / "out2"), str(tmp_path / "ckpt"))
    with pytest.raises(UserInputError, match="belongs to another stream: it was made for output_path"):
        moved.validate()
    fresh_ckpt = StreamParams(uri, generated_100_files, str(tmp_path / "out"), str(tmp_path / "new-ckpt"))
    with pytest.raises(UserInputError, match="already holds data but checkpoint"):
        fresh_ckpt.validate()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"max_files_per_trigger": 0}, "max_files_per_trigger must be >= 1"),
        ({"trigger": "sometimes"}, "trigger must be 'available_now' or an interval"),
        ({"input_path": "/no/such/folder"}, "does not exist"),
        ({"checkpoint_path": ""}, "checkpoint_path is empty"),
        ({"model_uri": "runs:/0123456789abcdef0123456789abcdef/model"}, "not found"),
    ],
)
def test_bad_stream_parameters(trained_model, generated_100_files, tmp_path, change, message):
    uri, _ = trained_model
    values = dict(
        model_uri=uri,
        input_path=generated_100_files,
        output_path=str(tmp_path / "o"),
        checkpoint_path=str(tmp_path / "c"),
    )
    values.update(change)
    with pytest.raises(UserInputError, match=message):
        StreamParams(**values).validate()


def test_empty_input_folder_and_schema_mismatch(spark, trained_model, tmp_path):
    uri, _ = trained_model
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="empty folder"):
        StreamParams(uri, str(tmp_path / "empty"), str(tmp_path / "o"), str(tmp_path / "c")).validate()
    spark.createDataFrame([(1.0,)], "bedrooms double").write.parquet(str(tmp_path / "narrow"))
    params = StreamParams(uri, str(tmp_path / "narrow"), str(tmp_path / "o"), str(tmp_path / "c"))
    with pytest.raises(UserInputError, match="does not match the model's signature: missing columns"):
        _stream(spark, params)
    assert not (tmp_path / "o").exists()


def _stream_command(uri, inp, out, ckpt, *extra):
    return [
        sys.executable,
        str(PROJECT_ROOT / "score_stream.py"),
        "--model_uri",
        uri,
        "--input_path",
        inp,
        "--output_path",
        out,
        "--checkpoint_path",
        ckpt,
        *extra,
    ]


def _popen(cmd):
    """The stream in its own process, stdout and stderr in one pipe read line by line: a second pipe
    nobody reads would fill (64 KB of Spark's warnings) and block the child."""
    env = {**os.environ}
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_batches(proc, count, timeout=240):
    """Read the output until `count` 'batch N' lines were printed; return them."""
    lines, seen, deadline = [], [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("score_stream: batch "):
            lines.append(line)
            if len(lines) >= count:
                return lines
    raise AssertionError(f"only {len(lines)} batches before timeout; output: {''.join(seen)[-3000:]}")


@pytest.mark.process
def test_sigkill_mid_stream_then_restart_is_exactly_once(spark, trained_model, generated_100_files, tmp_path):
    uri, pipeline = trained_model
    out, ckpt = str(tmp_path / "out"), str(tmp_path / "ckpt")
    cmd = _stream_command(uri, generated_100_files, out, ckpt, "--max_files_per_trigger", "4")
    proc = _popen(cmd)
    try:
        _wait_for_batches(proc, 3)
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: mid-batch or between batches
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the JVM child dies with its parent's pipe; give it a moment to go
    time.sleep(2)
    committed = spark.read.parquet(out).count()
    assert 0 < committed < 3000
    # the same command again (its click command in-process: what resumes is the checkpoint, not the process)
    result = script_in_process(*cmd[1:], "--max_files_per_trigger", "50")
    assert result.returncode == 0, result.stderr[-3000:]
    from sparkmlops.inference.resolve import resolve_model

    columns = [c for c, _ in resolve_model(uri).input_columns()]
    assert spark.read.parquet(out).count() == 3000
    assert _sink_digest(spark, out, columns) == _expected_digest(spark, pipeline, generated_100_files, columns)


@pytest.mark.process
@pytest.mark.parametrize("sent, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_stream_cleanly_and_the_run_is_killed(
    spark, client, trained_model, generated_100_files, tmp_path, sent, code
):
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM on a running stream: it stops after a safe point, logs its
    summary, and ends as every interrupted entry point does (README, exit codes): 130 or 143, run KILLED;
    what it committed stays, and the same command resumes."""
    uri, _ = trained_model
    out, ckpt = str(tmp_path / "out"), str(tmp_path / "ckpt")
    cmd = _stream_command(uri, generated_100_files, out, ckpt, "--trigger", "1 second")
    proc = _popen(cmd)
    try:
        _wait_for_batches(proc, 2)
        proc.send_signal(sent)
        output, _ = proc.communicate(timeout=120)  # stdout and stderr in one pipe (_popen)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, output[-3000:]
    name = signal.Signals(sent).name
    assert f"{name} received" in output and f"score_stream: stopped by {name} after" in output, output[-2000:]
    # The last line this process wrote (Spark's JVM, on the same pipe, may still log the task it interrupted).
    ours = [line for line in output.splitlines() if line.startswith(("error:", "score_stream:"))]
    assert ours[-1] == ("error: aborted." if sent == signal.SIGINT else "error: terminated."), output[-2000:]
    run = newest_run(client)
    assert run.info.status == "KILLED", run.info.status
    assert run.data.tags["exit_code"] == str(code) and run.data.metrics["stopped_by_signal"] == 1
    committed = spark.read.parquet(out).count()
    assert committed == run.data.metrics["rows_scored"] and committed > 0, (committed, run.data.metrics)


def test_score_stream_script_bad_model_is_one_line(client, generated_100_files, pyfunc_model_uri, tmp_path):
    result = script_in_process(
        "score_stream.py",
        "--model_uri",
        pyfunc_model_uri,
        "--input_path",
        generated_100_files,
        "--output_path",
        str(tmp_path / "o"),
        "--checkpoint_path",
        str(tmp_path / "c"),
    )
    assert_refused(result, client, "is not a Spark model")  # before Spark: no spark_master tag
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def _write_one_file(frame, folder, name):
    """``frame`` as the single parquet file ``folder/name`` (written aside, then moved in: it arrives whole)."""
    staging = folder.parent / f".staging-{name}"
    frame.coalesce(1).write.parquet(str(staging))
    os.rename(next(p for p in staging.iterdir() if p.name.endswith(".parquet")), folder / name)


# (A file without one of the model's numeric columns is not among them: a stream reads it with the columns it
# expects, as nulls, which train's models impute. A file already there when the stream starts is refused for it.)
@pytest.mark.parametrize("bad_file", ["another_schema", "corrupt"])
def test_bad_file_mid_stream_stops_with_one_line_and_resumes_exactly_once(
    spark, client, trained_model, tmp_path, bad_file
):
    """A running stream (trigger every second) has scored three files; then a bad file arrives: the stream
    stops by itself with one line naming it, exit 2, run FAILED, the committed output intact. Once it is
    removed, the same command resumes and scores the file that came after it, every row exactly once."""
    import threading

    from pyspark.sql import functions as F

    uri, pipeline = trained_model
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    rows = (
        generators.generate_airbnb(spark, 400, seed=5).withColumn("part", F.monotonically_increasing_id() % 4).cache()
    )
    for i in range(3):
        _write_one_file(rows.filter(F.col("part") == i).drop("part"), incoming, f"part-{i}.parquet")
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    command = [
        "score_stream.py",
        "--model_uri",
        uri,
        "--input_path",
        str(incoming),
        "--output_path",
        str(out),
        "--checkpoint_path",
        str(ckpt),
        "--max_files_per_trigger",
        "1",
    ]
    bad = incoming / "part-bad.parquet"

    def arrive():
        deadline = time.time() + 240
        while (
            time.time() < deadline
            and len([n for n in os.listdir(ckpt / "commits") if n.isdigit()] if (ckpt / "commits").exists() else []) < 3
        ):
            time.sleep(0.5)
        base = rows.filter(F.col("part") == 0).drop("part").limit(5)
        if bad_file == "corrupt":
            bad.write_bytes(b"PAR1" + b"\0garbage" * 64)
        else:
            _write_one_file(base.withColumn("accommodates", F.col("accommodates").cast("string")), incoming, bad.name)
        time.sleep(1.5)  # the bad file first: maxFilesPerTrigger takes the oldest
        _write_one_file(rows.filter(F.col("part") == 3).drop("part"), incoming, "part-3.parquet")
        time.sleep(120)
        if not stopped.is_set():  # the stream did not stop by itself: end it, so the test fails instead of hanging
            os.kill(os.getpid(), signal.SIGINT)

    stopped = threading.Event()
    threading.Thread(target=arrive, daemon=True).start()
    try:
        result = script_in_process(*command, "--trigger", "1 second")
    finally:
        stopped.set()  # however the stream ended: never interrupt a later test
    assert result.returncode == 2, result.stderr[-3000:]
    line = last_line(result.stderr)
    assert line.startswith("error: score_stream stopped: file ") and "part-bad.parquet" in line, line
    run = newest_run(client)
    assert run.info.status == "FAILED" and run.data.tags["exit_code"] == "2"
    committed = spark.read.parquet(str(out)).count()
    assert committed == rows.filter(F.col("part") < 3).count()  # what was committed stays as it was

    bad.unlink()
    result = script_in_process(*command)
    assert result.returncode == 0, result.stderr[-3000:]
    # The restart replays the failed micro-batch without the removed file: said, counted and listed.
    assert f"skipped {bad}: the file was gone when the batch read it" in result.stdout, result.stdout[-2000:]
    resumed = newest_run(client)
    assert resumed.data.metrics["skipped_files"] == 1
    listed = mlflow.artifacts.load_dict(f"runs:/{resumed.info.run_id}/stream/skipped_files.json")
    assert listed == {"skipped_files": [str(bad)]}
    columns = [c for c, _ in resolve.resolve_model(uri).input_columns()]
    assert _sink_digest(spark, str(out), columns) == _expected_digest(spark, pipeline, str(incoming), columns)
    assert spark.read.parquet(str(out)).count() == 400  # every good row once: none lost, none twice


def test_a_bad_file_already_there_is_named_before_spark(trained_model, tmp_path, spark):
    from pyspark.sql import functions as F

    uri, _ = trained_model
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    good = generators.generate_airbnb(spark, 50, seed=5)
    _write_one_file(good, incoming, "part-0.parquet")
    _write_one_file(good.withColumn("bedrooms", F.col("bedrooms").cast("string")), incoming, "part-1.parquet")
    params = StreamParams(uri, str(incoming), str(tmp_path / "out"), str(tmp_path / "ckpt"))
    with pytest.raises(
        UserInputError,
        match=r"input file .*part-1.parquet does not match the model's signature: "
        r"wrong types: bedrooms is string, model expects numeric",
    ):
        params.validate()


@pytest.mark.process
def test_a_second_stream_on_a_checkpoint_in_use_is_refused(client, trained_model, generated_100_files, tmp_path):
    """While a stream holds its checkpoint (here this process, as a running score_stream does from its
    checks on), a second score_stream process on it is refused before Spark starts, instead of racing it
    for the same micro-batches; once the first ends, the checkpoint is free again."""
    from sparkmlops.score.score_stream import release_checkpoint

    uri, _ = trained_model
    out, ckpt = str(tmp_path / "out"), str(tmp_path / "ckpt")
    first = StreamParams(uri, generated_100_files, out, ckpt)
    first.validate()  # holds the checkpoint, as the running stream would
    try:
        second = python_script(*_stream_command(uri, generated_100_files, out, ckpt)[1:])
        assert second.returncode == 2, second.stderr[-2000:]
        assert last_line(second.stderr).startswith(
            f"error: checkpoint '{ckpt}' is in use by another score_stream (process {os.getpid()} on "
        ), second.stderr[-2000:]
        assert not any(sign in second.stderr for sign in JVM_SIGNS), "a JVM started before the refusal"
        assert newest_run(client).info.status == "FAILED"
    finally:
        release_checkpoint(ckpt)
    first.validate()  # free again
    release_checkpoint(ckpt)
