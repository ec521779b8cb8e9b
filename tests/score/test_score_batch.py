"""Batch scoring in-process: predictions equal transform, signature checks, model URIs, registry."""

import time

import mlflow
import numpy as np
import pytest
from conftest import in_tracked_run, runs_of, script_in_process
from pyspark.sql import functions as F

from sparkmlops.core.errors import UserInputError
from sparkmlops.data import digests, generators
from sparkmlops.inference import resolve
from sparkmlops.score.score_batch import BatchParams, predict_batch


def _score(spark, params):
    return in_tracked_run(params, lambda model: predict_batch(spark, params, model))


def test_predictions_equal_transform(spark, client, trained_model, default_data, tmp_path):
    uri, pipeline = trained_model
    out = str(tmp_path / "scored")
    started = time.perf_counter()
    run_id, summary = _score(spark, BatchParams(uri, default_data, out))
    elapsed = time.perf_counter() - started
    source = spark.read.parquet(default_data)
    scored = spark.read.parquet(out)
    assert scored.columns == source.columns + ["prediction"]
    assert summary["rows_scored"] == scored.count() == source.count()
    expected = pipeline.transform(source).select(*source.columns, "prediction")
    assert digests.content_digest(scored) == digests.content_digest(expected)
    run = client.get_run(run_id)
    metrics = run.data.metrics
    assert metrics["rows_scored"] == source.count()
    # the throughput of the scoring itself: within the call's own wall time, and rows over those seconds
    assert 0 < metrics["seconds"] < elapsed
    assert metrics["rows_per_second"] == pytest.approx(metrics["rows_scored"] / metrics["seconds"], rel=1e-6)
    assert run.data.tags["model_run_id"] == uri.split("/")[1]
    assert run.data.tags["input_digest"] and run.data.tags["input_path"] == default_data


def test_mode_semantics(spark, trained_model, default_data, tmp_path):
    uri, _ = trained_model
    out = str(tmp_path / "scored")
    small = tmp_path / "small.parquet"
    spark.read.parquet(default_data).limit(30).write.parquet(str(small))
    _score(spark, BatchParams(uri, default_data, out))
    with pytest.raises(UserInputError, match="already exists: choose a new path or pass -P mode=overwrite"):
        BatchParams(uri, str(small), out).validate()
    assert spark.read.parquet(out).count() == generators.DEFAULT_N_ROWS
    _score(spark, BatchParams(uri, str(small), out, mode="overwrite"))
    assert spark.read.parquet(out).count() == 30


def test_extra_columns_pass_through_and_types_are_cast(spark, trained_model, default_data, tmp_path):
    uri, pipeline = trained_model
    source = spark.read.parquet(default_data).limit(40)
    varied = source.withColumn("zipcode", F.lit("94110")).withColumn("accommodates", F.col("accommodates").cast("int"))
    inp = tmp_path / "in.parquet"
    varied.write.parquet(str(inp))
    _score(spark, BatchParams(uri, str(inp), str(tmp_path / "out")))
    scored = spark.read.parquet(str(tmp_path / "out"))
    assert "zipcode" in scored.columns and dict(scored.dtypes)["accommodates"] == "int"
    expected = [r.prediction for r in pipeline.transform(source).collect()]
    assert [r.prediction for r in scored.collect()] == expected


def test_schema_mismatch_names_the_columns(spark, trained_model, default_data, tmp_path):
    uri, _ = trained_model
    bad = spark.read.parquet(default_data).limit(5).drop("bedrooms", "room_type").withColumn("beds", F.lit("two"))
    inp = tmp_path / "bad.parquet"
    bad.write.parquet(str(inp))
    params = BatchParams(uri, str(inp), str(tmp_path / "out"))
    with pytest.raises(
        UserInputError,
        match=r"missing columns room_type, bedrooms and wrong types: "
        r"beds is string, model expects double",
    ):
        _score(spark, params)
    assert not (tmp_path / "out").exists()


def test_registered_model_uris(spark, client, trained_model, default_data, tmp_path):
    uri, _ = trained_model
    version = mlflow.register_model(uri, "scoring-test-price")
    client.set_registered_model_alias("scoring-test-price", "champion", version.version)
    for model_uri in (f"models:/scoring-test-price/{version.version}", "models:/scoring-test-price@champion"):
        resolved = resolve.resolve_model(model_uri)
        assert resolved.registered_name == "scoring-test-price" and resolved.version == str(version.version)
        assert resolved.run_id == uri.split("/")[1]
    run_id, summary = _score(
        spark, BatchParams("models:/scoring-test-price@champion", default_data, str(tmp_path / "by-alias"))
    )
    assert summary["rows_scored"] == generators.DEFAULT_N_ROWS
    assert client.get_run(run_id).data.tags["model_version"] == str(version.version)


def test_local_model_folder(spark, trained_model, tmp_path, default_data):
    uri, _ = trained_model
    folder = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "m"))
    resolved = resolve.resolve_model(folder)
    assert "spark" in resolved.flavors
    _, summary = _score(spark, BatchParams(folder, default_data, str(tmp_path / "out")))
    assert summary["rows_scored"] == generators.DEFAULT_N_ROWS


@pytest.mark.parametrize(
    "uri, message",
    [
        ("", "model_uri is empty"),
        ("runs:/0123456789abcdef0123456789abcdef/model", "not found"),
        ("models:/no-such-model/1", "not found"),
        ("models:/scoring-test-price@no-such-alias", "not found"),
        ("/no/such/model/folder", "neither a model URI nor an existing folder"),
    ],
)
def test_bad_model_uris(uri, message):
    with pytest.raises(UserInputError, match=message):
        resolve.resolve_model(uri)


@pytest.fixture
def refusing_server():
    """An HTTP server on 127.0.0.1 that answers every request 403 with MLflow's error body, as a tracking or
    registry server behind an authenticating proxy does for a user without rights."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Forbidden(BaseHTTPRequestHandler):
        def _refuse(self):
            body = json.dumps({"error_code": "PERMISSION_DENIED", "message": "no rights on this model"}).encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _refuse

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:  # bound then closed: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "outage",
    [
        "registry server down",
        "registry refuses (403)",
        "artifact store down",
        "registered version's artifact store down",
    ],
)
def test_an_outage_is_a_failure_not_bad_input(client, monkeypatch, refusing_server, default_data, tmp_path, outage):
    """Only "does not exist" is bad input (exit 2, which a scheduler does not retry): a model store that is
    down or refuses is a failure (exit 1, retried), with a line that says so."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = "models:/scoring-test-price@champion"
    if outage == "registry server down":
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"http://127.0.0.1:{_closed_port()}")
    elif outage == "registry refuses (403)":
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", refusing_server)
    else:  # a run whose artifacts live on an HTTP artifact server that is down
        experiment = client.create_experiment(
            f"artifacts-down-{tmp_path.name}", artifact_location=f"http://127.0.0.1:{_closed_port()}/artifacts"
        )
        uri = f"runs:/{client.create_run(experiment).info.run_id}/model"
        if outage.startswith("registered"):  # a version registered from that run (as MLflow 2 registered)
            name = f"artifacts-down-{tmp_path.name}"
            client.create_registered_model(name)
            version = client.create_model_version(name, source=uri, run_id=uri.split("/")[1])
            client.set_registered_model_alias(name, "champion", version.version)
            uri = f"models:/{name}@champion"
    result = script_in_process(
        "score_batch.py", "--model_uri", uri, "--input_path", default_data, "--output_path", str(tmp_path / "out")
    )
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: could not read model '{uri}'") and "not a problem with the URI" in line, line
    run = runs_of(client, max_results=1)[0]
    assert run.info.status == "FAILED" and run.data.tags["exit_code"] == "1", run.data.tags
    assert result.spark_sessions == 0 and not (tmp_path / "out").exists()


def test_non_spark_model_is_refused(pyfunc_model_uri):
    with pytest.raises(UserInputError, match="is not a Spark model"):
        resolve.resolve_model(pyfunc_model_uri)
    # score_batch takes any python_function model, but only one it can check: this one has no signature
    from sparkmlops.inference.pandas_predict import check_pyfunc_model

    with pytest.raises(UserInputError, match="has no input signature"):
        check_pyfunc_model(resolve.resolve_model(pyfunc_model_uri, require_flavor=""))


# The export's documented parity (docs/serving.md), a literal here so that loosening it fails this test.
EXPORT_PARITY = 1e-6


def test_an_onnx_export_scores_like_its_spark_model_sending_only_its_columns(
    spark, client, trained_model, default_data, tmp_path
):
    """score_batch of export_onnx's pyfunc: the Spark model's predictions within the export's parity, the
    input's other columns (a wide text one here) kept with their types, one model load per Python worker."""
    from sparkmlops.serve.export_onnx import ExportParams, export_and_log

    uri, _ = trained_model
    _, exported = in_tracked_run(ExportParams(model_uri=uri), lambda plan: export_and_log(spark, plan))
    source = str(tmp_path / "in")
    (
        spark.read.parquet(default_data)
        .withColumn("listing_text", F.repeat(F.lit("lorem ipsum "), 50))
        .withColumn("accommodates", F.col("accommodates").cast("int"))
        .repartition(3)
        .write.parquet(source)
    )
    # The export as a user scores it: `python score_batch.py --model_uri <the export>`.
    result = script_in_process(
        "score_batch.py",
        "--model_uri",
        f"runs:/{exported['run_id']}/model",
        "--input_path",
        source,
        "--output_path",
        str(tmp_path / "onnx"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs_of(client, filter_string=f"params.output_path = '{tmp_path / 'onnx'}'")
    run_id = run.info.run_id
    _score(spark, BatchParams(uri, source, str(tmp_path / "spark")))

    by_onnx, by_spark = (spark.read.parquet(str(tmp_path / side)) for side in ("onnx", "spark"))
    assert by_onnx.dtypes == by_spark.dtypes and by_onnx.columns[-1] == "prediction"
    keys = [c for c in by_onnx.columns if c != "prediction"]
    onnx_rows, spark_rows = (
        frame.toPandas().sort_values(keys, kind="stable").reset_index(drop=True) for frame in (by_onnx, by_spark)
    )
    assert (
        len(onnx_rows) == client.get_run(run_id).data.metrics["rows_scored"] == spark.read.parquet(default_data).count()
    )
    assert onnx_rows[keys].equals(spark_rows[keys])
    np.testing.assert_allclose(onnx_rows["prediction"], spark_rows["prediction"], rtol=EXPORT_PARITY, atol=0)
    run = client.get_run(run_id)
    assert run.data.tags["scored_with"] == "arrow_pandas_udf"
    partitions = spark.read.parquet(source).rdd.getNumPartitions()
    assert 1 <= run.data.metrics["model_loads"] <= partitions
    assert run.data.metrics["arrow_batches"] >= partitions
