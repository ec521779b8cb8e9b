"""`serve`: MLflow's scoring protocol exactly (the same requests to `mlflow models serve` and to `serve` get
the same status and answer), the alias followed without a failed request, a broken version not swapped
in, several workers, metrics, and a graceful stop on SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
import urllib.request

import mlflow
import pandas as pd
import pytest
from conftest import EXPERIMENT, in_tracked_run, last_line, script_in_process

from sparkmlops.core import model_registry
from sparkmlops.inference import resolve
from sparkmlops.serve import scoring_protocol, serve
from sparkmlops.serve.export_onnx import ExportParams, export_and_log
from sparkmlops.train.train import TrainParams, train_and_log
from tools import model_server

pytestmark = pytest.mark.process

PRICE_ONNX = "serve_test_price_onnx"


def _export(spark, model_uri: str, register_as: str = "") -> str:
    """The export's model URI (models:/<name>/<n> when registered)."""
    _, summary = in_tracked_run(
        ExportParams(model_uri=model_uri, register_as=register_as), lambda plan: export_and_log(spark, plan)
    )
    return f"models:/{register_as}/{summary['registered_version']}" if register_as else summary["model_uri"]


@pytest.fixture(scope="module")
def price_versions(spark, trained_model, other_trained_model):
    """Versions 1 and 2 of a registered export (two different forests), @champion on 1."""
    first = _export(spark, trained_model[0], PRICE_ONNX)
    second = _export(spark, other_trained_model, PRICE_ONNX)
    model_registry.set_alias(PRICE_ONNX, "champion", "1")
    return first, second


@pytest.fixture(scope="module")
def classifier_export(spark, default_data):
    _, result = in_tracked_run(
        TrainParams(data_path=default_data, label_col="room_type", num_trees=5, max_depth=4),
        lambda p: train_and_log(spark, p),
    )
    return _export(spark, result.model_uri)


@pytest.fixture(scope="module")
def rows(default_data):
    return pd.read_parquet(default_data).head(6)


def _post(url: str, body: bytes, content_type: str = "application/json"):
    """(status, headers, body bytes) of POST /invocations."""
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _error(body: bytes):
    try:
        answer = json.loads(body)
    except ValueError:
        return body  # plain text (415)
    return answer["error_code"], re.sub(r"\{'[^}]*'\}", "{...}", answer["message"])


def _metric(url: str, line_start: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def _requests(rows, label_col: str | None = None):
    """(name, body, content type, answered by the fast path) for good and bad requests alike."""
    records = json.loads(rows.to_json(orient="records"))
    split = json.loads(rows.to_json(orient="split", index=False))
    one = records[0]
    columns = {c: [r[c] for r in records] for c in one}
    string_col = "room_type" if label_col != "room_type" else "property_type"
    as_json = json.dumps
    cases = [
        ("records", as_json({"dataframe_records": records}), True),
        ("split", as_json({"dataframe_split": split}), True),
        ("instances", as_json({"instances": records}), True),
        ("inputs as columns", as_json({"inputs": columns}), True),
        ("inputs as records", as_json({"inputs": records}), True),
        ("an extra column", as_json({"dataframe_records": [{**one, "not_a_feature": 1}]}), True),
        ("an unseen category", as_json({"dataframe_records": [{**one, string_col: "Igloo"}]}), True),
        ("integers in double columns", as_json({"dataframe_records": [{**one, "bedrooms": 2, "latitude": 37}]}), True),
        ("a null category", as_json({"dataframe_records": [{**one, string_col: None}]}), False),
        ("a null number", as_json({"dataframe_records": [{**one, "bedrooms": None}]}), False),
        ("params", as_json({"dataframe_records": [one], "params": {}}), False),
        ("malformed JSON", '{"dataframe_records": [', False),
        (
            "a missing column",
            as_json({"dataframe_records": [{k: v for k, v in one.items() if k != "bedrooms"}]}),
            False,
        ),
        ("a string in a number column", as_json({"dataframe_records": [{**one, "bedrooms": "two"}]}), False),
        ("a number in a string column", as_json({"dataframe_records": [{**one, string_col: 3}]}), False),
        ("no input key", as_json({"rows": records}), False),
        ("two input keys", as_json({"dataframe_records": records, "instances": records}), False),
        ("no rows", as_json({"dataframe_records": []}), False),
        ("a boolean in a number column", as_json({"dataframe_records": [{**one, "bedrooms": True}]}), False),
        ("a split with a short index", as_json({"dataframe_split": {**split, "index": [0]}}), False),
        ("instances with a key in one only", as_json({"instances": [{**records[0], "x": 1}, *records[1:]]}), False),
        ("inputs with a column of another length", as_json({"inputs": {**columns, "x": [1]}}), False),
    ]
    answered = [(name, body.encode(), "application/json", fast) for name, body, fast in cases]
    answered.append(("CSV", rows.to_csv(index=False).encode(), "text/csv", False))
    answered.append(("another content type", b"<rows/>", "application/xml", False))
    return answered


@pytest.mark.parametrize("kind", ["regression", "classifier"])
def test_serve_answers_every_request_as_mlflow_models_serve_does(
    price_versions, classifier_export, rows, tmp_path, kind
):
    """The contract: status codes and bodies equal to `mlflow models serve`'s, predictions included, for
    every request form and every bad request; the forms the fast path takes were answered by it."""
    model_uri = price_versions[0] if kind == "regression" else classifier_export
    data = rows.drop(columns=["price" if kind == "regression" else "room_type"])  # the classifier uses price
    cases = _requests(data, None if kind == "regression" else "room_type")
    process, serve_url = model_server.start_serve(model_uri, tmp_path / "serve.log")
    try:
        with model_server.served(model_uri, tmp_path / "mlflow.log") as mlflow_url:
            for name, body, content_type, _ in cases:
                theirs, ours = _post(mlflow_url, body, content_type), _post(serve_url, body, content_type)
                assert ours[0] == theirs[0], (name, ours, theirs)
                if ours[0] == 200:
                    assert json.loads(ours[2]) == json.loads(theirs[2]), name
                    assert ours[1]["x-model-uri"] == model_uri
                else:  # MLflow's own error and message (a set in it prints in each process's hash order)
                    assert _error(ours[2]) == _error(theirs[2]), name
            fast = sum(1 for *_, took_fast in cases if took_fast)
            assert _metric(serve_url, 'sparkmlops_serve_requests_total{path="fast",status="200"}') == fast
            assert _metric(serve_url, "sparkmlops_serve_requests_total") == len(cases)
            assert _metric(serve_url, "sparkmlops_serve_request_duration_seconds_count") == len(cases)
        if kind == "classifier":
            answer = json.loads(_post(serve_url, cases[0][1])[2])["predictions"][0]
            assert set(answer) == {"prediction", "probability"} and abs(sum(answer["probability"]) - 1) < 1e-9
    finally:
        model_server.stop(process)


BROKEN_MODEL = """
import mlflow

class Broken(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        if {fails_to_load}:
            raise RuntimeError("this version cannot load, on purpose")

    def predict(self, context, model_input, params=None):
        raise RuntimeError("this version cannot predict, on purpose")

mlflow.models.set_model(Broken())
"""


def _broken_model_version(tmp_path, rows, fails_to_load: bool) -> str:
    """A registered version of the test model whose pyfunc fails to load, or loads but cannot answer its own
    input example (a model-from-code file)."""
    code = tmp_path / f"broken_{fails_to_load}.py"
    code.write_text(BROKEN_MODEL.format(fails_to_load=fails_to_load))
    example = None if fails_to_load else rows.drop(columns=["price"]).head(2)
    with mlflow.start_run(run_name="broken-version"):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(code), pip_requirements=["mlflow"], input_example=example
        )
    return mlflow.register_model(info.model_uri, PRICE_ONNX).version


def test_serve_follows_the_alias_without_a_failed_request(price_versions, rows, client, tmp_path):
    """Requests flow while @champion moves 1 -> 2 -> 1 (a rollback), then to a version that cannot load and
    to one that cannot answer its input example: no request fails, each answer carries the version that made
    it (with that version's prediction), neither broken version is swapped in (nor tried again at the next
    polls), and SIGTERM ends the server with exit 0 and its run FINISHED."""
    row = rows.drop(columns=["price"]).head(1)
    body = json.dumps({"dataframe_records": json.loads(row.to_json(orient="records"))}).encode()
    expected = {
        str(v): mlflow.pyfunc.load_model(uri).predict(row)["prediction"][0] for v, uri in enumerate(price_versions, 1)
    }
    assert expected["1"] != expected["2"]  # two different forests: the answers tell them apart
    broken = [_broken_model_version(tmp_path, rows, fails_to_load) for fails_to_load in (True, False)]
    log = tmp_path / "serve.log"
    process, url = model_server.start_serve(f"models:/{PRICE_ONNX}@champion", log, options=("--poll_seconds", "0.2"))
    answers, failures, done = [], [], threading.Event()

    def ask():
        while not done.is_set():
            status, headers, answer = _post(url, body)
            if status != 200:
                failures.append((status, answer))
            else:
                answers.append((headers["x-model-version"], json.loads(answer)["predictions"][0]["prediction"]))

    def wait_for_version(version: str):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if answers and answers[-1][0] == version:
                return
            time.sleep(0.05)
        raise AssertionError(f"version {version} never answered: {answers[-3:]}")

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        wait_for_version("1")
        for version in ("2", "1"):
            model_registry.set_alias(PRICE_ONNX, "champion", version)
            wait_for_version(version)
        for refusals, version in enumerate(broken, 1):
            model_registry.set_alias(PRICE_ONNX, "champion", version)
            deadline = time.monotonic() + 60
            while log.read_text().count("NOT swapped in") < refusals and time.monotonic() < deadline:
                time.sleep(0.1)
        time.sleep(0.5)
        count_after_refusal = len(answers)
        time.sleep(0.5)  # more polls, each seeing the alias on the refused version
        refused = _metric(url, 'sparkmlops_serve_model_swaps_total{outcome="refused"}')
        swapped = _metric(url, 'sparkmlops_serve_model_swaps_total{outcome="swapped"}')
    finally:
        done.set()
        asker.join()
        model_registry.set_alias(PRICE_ONNX, "champion", "1")
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(timeout=60)
        finally:
            model_server.stop(process)
    assert not failures, failures[:3]
    assert len(answers) > count_after_refusal and {v for v, _ in answers[count_after_refusal:]} == {"1"}
    versions = [v for i, (v, _) in enumerate(answers) if i == 0 or answers[i - 1][0] != v]
    assert versions == ["1", "2", "1"], versions  # each swap once, and never a broken version
    for version, prediction in answers:
        assert prediction == pytest.approx(expected[version], rel=1e-12)
    assert (refused, swapped) == (2, 2)
    text = log.read_text()
    assert f"moved to version {broken[0]}, which was NOT swapped in" in text and "cannot load, on purpose" in text
    assert f"moved to version {broken[1]}, which was NOT swapped in" in text and "input example got HTTP" in text
    assert exit_code == 0, text[-3000:]
    assert last_line(text) == f"serve: stopped gracefully ({url})."
    run = client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id],
        "tags.entry_point = 'serve'",
        order_by=["start_time DESC"],
        max_results=1,
    )[0]
    assert run.info.status == "FINISHED" and run.data.tags["exit_code"] == "0"
    history = client.get_metric_history(run.info.run_id, "served_model_version")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [2.0, 1.0]


def test_two_workers_follow_the_alias_and_stop_gracefully(price_versions, rows, default_data, tmp_path):
    """workers=2: both processes load the model and follow @champion, /metrics adds up both, and SIGTERM
    lets the request in flight finish before the exit 0."""
    body = json.dumps(
        {"dataframe_records": json.loads(rows.drop(columns=["price"]).to_json(orient="records"))}
    ).encode()
    process, url = model_server.start_serve(
        f"models:/{PRICE_ONNX}@champion", tmp_path / "serve.log", options=("--workers", "2", "--poll_seconds", "0.2")
    )
    statuses = []

    def version_sum_reaches(total: float) -> bool:  # the workers' model_version gauges, added up
        deadline = time.monotonic() + 120
        while _metric(url, "sparkmlops_serve_model_version{") != total and time.monotonic() < deadline:
            time.sleep(0.2)
        return _metric(url, "sparkmlops_serve_model_version{") == total

    try:
        assert version_sum_reaches(2.0)  # version 1 in each worker (/ping answers once one is up)
        threads = [
            threading.Thread(target=lambda: statuses.extend(_post(url, body)[0] for _ in range(50))) for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [200] * 200
        assert _metric(url, "sparkmlops_serve_requests_total") == 200
        model_registry.set_alias(PRICE_ONNX, "champion", "2")
        assert version_sum_reaches(4.0)  # both swapped to version 2
        # a request that takes about a second (57k CSV rows through MLflow's handler) is in flight at SIGTERM
        big = pd.concat([pd.read_parquet(default_data).drop(columns=["price"])] * 8, ignore_index=True)
        csv, answered = big.to_csv(index=False).encode(), []
        in_flight = threading.Thread(target=lambda: answered.append((*_post(url, csv, "text/csv"), time.monotonic())))
        in_flight.start()
        time.sleep(0.5)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        in_flight.join()
        exit_code = process.wait(timeout=60)
    finally:
        model_registry.set_alias(PRICE_ONNX, "champion", "1")
        model_server.stop(process)
    assert exit_code == 0, (tmp_path / "serve.log").read_text()[-3000:]
    [(status, headers, answer, finished)] = answered
    assert status == 200 and headers["x-model-version"] == "2" and finished > signalled  # in flight at SIGTERM
    assert len(json.loads(answer)["predictions"]) == len(big)


def test_a_spark_model_is_served_with_a_warning_pointing_at_the_export(capsys):
    serve.warn_if_spark(resolve.ResolvedModel("runs:/abc/model", "abc", "", "", ("python_function", "spark"), None))
    serve.warn_if_spark(resolve.ResolvedModel("runs:/def/model", "def", "", "", ("python_function",), None))
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: runs:/abc/model is a Spark model") and "export_onnx" in line


@pytest.mark.parametrize(
    "options, message",
    [
        (("--port", "70000"), "port=70000 is not a TCP port"),
        (("--workers", "0"), "workers=0: pass 1 or more"),
        (("--poll_seconds", "-1"), "poll_seconds=-1.0"),
    ],
)
def test_bad_serving_parameters_are_refused_before_loading(price_versions, options, message):
    result = script_in_process("serve.py", "--model_uri", price_versions[0], *options)
    assert result.returncode == 2 and message in last_line(result.stderr), result.stderr[-2000:]


def test_a_port_in_use_is_refused_in_one_line(price_versions):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = script_in_process("serve.py", "--model_uri", price_versions[0], "--port", port)
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in last_line(result.stderr)


def test_a_missing_model_is_refused_in_one_line():
    result = script_in_process("serve.py", "--model_uri", "models:/no_such_model_for_serve@champion")
    assert result.returncode == 2 and "no_such_model_for_serve" in last_line(result.stderr)


@pytest.mark.parametrize(
    "payload, columns",
    [
        ({"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}}, {"a": [1, 2], "b": ["x", "y"]}),
        ({"dataframe_records": [{"a": 1, "b": "x"}]}, {"a": [1], "b": ["x"]}),
        ({"instances": [{"a": 1, "b": "x", "c": 0}]}, {"a": [1], "b": ["x"]}),
        ({"inputs": {"a": [1, 2], "b": ["x", "y"]}}, {"a": [1, 2], "b": ["x", "y"]}),
    ],
)
def test_the_fast_path_reads_each_form_by_column(payload, columns):
    assert scoring_protocol.columns_of(payload, ["a", "b"]) == columns


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2]]}},  # a ragged row
        {"dataframe_records": [{"a": 1}]},  # b missing
        {"inputs": {"a": [1, 2], "b": ["x"]}},  # columns of different lengths
        {"dataframe_records": []},
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"]], "index": [0, 1]}},  # an index to check
        {"instances": [{"a": 1, "b": "x", "c": 2}, {"a": 1, "b": "x"}]},  # keys differ between records
        {"inputs": {"a": [1, 2], "b": ["x", "y"], "c": [1]}},  # an unused column of another length
        {"dataframe_records": [{"a": 1, "b": "x"}], "params": {"k": 1}},
        [{"a": 1, "b": "x"}],
    ],
)
def test_the_fast_path_leaves_anything_else_to_mlflow(payload):
    with pytest.raises(scoring_protocol.Undecided):
        scoring_protocol.columns_of(payload, ["a", "b"])
