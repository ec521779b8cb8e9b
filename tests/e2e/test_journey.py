"""The README's own command sequence, through the `mlflow run` CLI on one tracking store, with the
README's parameters: the pipeline (check, train, evaluate, register, promote, score by alias), and the
same command again, started while the first runs: it waits, then reuses every step without a JVM ->
export_onnx -> the export to its own @champion -> `mlflow run -e serve` of it, answering while a new
version is promoted -> generate drifted data -> check_drift.

`mlflow run -e reproduce` of a run the CLI launched is tests/e2e/test_user_path.py's (from a git URL, the
harder case); that a reproduction never registers is tests/reproduce/test_reproduce.py's."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import commit_all, copy_project, entry_env, launched_run_id, run_entry
from test_mlflow_run import MLFLOW

from tools import model_server

# The README's request (section "Real-time serving"), one listing.
README_RECORD = {
    "host_is_superhost": "t",
    "cancellation_policy": "moderate",
    "instant_bookable": "f",
    "neighbourhood_cleansed": "Mission",
    "property_type": "Apartment",
    "room_type": "Entire home/apt",
    "bed_type": "Real Bed",
    "host_total_listings_count": 1,
    "latitude": 37.76,
    "longitude": -122.42,
    "accommodates": 2,
    "bathrooms": 1,
    "bedrooms": 1,
    "beds": 1,
    "minimum_nights": 2,
    "number_of_reviews": 10,
    "review_scores_rating": 95,
    "review_scores_accuracy": 10,
    "review_scores_cleanliness": 10,
    "review_scores_checkin": 10,
    "review_scores_communication": 10,
    "review_scores_location": 10,
    "review_scores_value": 10,
    "bedrooms_na": 0,
    "bathrooms_na": 0,
    "beds_na": 0,
    "review_scores_rating_na": 0,
    "review_scores_accuracy_na": 0,
    "review_scores_cleanliness_na": 0,
    "review_scores_checkin_na": 0,
    "review_scores_communication_na": 0,
    "review_scores_location_na": 0,
    "review_scores_value_na": 0,
}


def _mlflow_run(project, *args):
    return run_entry([MLFLOW, "run", ".", "--env-manager", "local", *args], cwd=project, timeout=1200)


def _ask(url: str, record: dict) -> tuple[str, float]:
    """(the version that answered, its prediction) for one record; HTTPError if it failed."""
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps({"dataframe_records": [record]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["X-Model-Version"], json.loads(response.read())["predictions"][0]["prediction"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A committed copy of the project: the user's clean clone."""
    work = copy_project(tmp_path_factory.mktemp("journey") / "sparkmlops")
    commit_all(work)
    return work


def test_readme_journey(client, spark, project, default_data, tmp_path):
    import mlflow

    scored = str(tmp_path / "scored.parquet")
    chain = ["-e", "pipeline", "-P", "register_as=sf_price"]
    chain += ["-P", f"score_input_path={default_data}", "-P", f"score_output_path={scored}"]
    # The same command twice, the second started while the first runs: it waits for the first, then
    # reuses every step (one model version, no second JVM).
    with ThreadPoolExecutor(2) as launcher:
        launched = [launcher.submit(_mlflow_run, project, *chain)]
        time.sleep(5)
        launched.append(launcher.submit(_mlflow_run, project, *chain))
        results = [f.result() for f in launched]
    parents = [client.get_run(launched_run_id(r)) for r in results]
    assert sorted(r.data.metrics["steps_reused"] for r in parents) == [0, 6]
    (first, first_out), (second, second_out) = sorted(
        zip(parents, results), key=lambda pair: pair[0].data.metrics["steps_reused"]
    )
    assert "waiting for another pipeline" in second_out.stderr and "waiting" not in first_out.stderr
    steps = ["check_data", "train", "evaluate", "register", "promote", "score_batch"]
    step_runs = {s: client.get_run(first.data.tags[f"step.{s}.run_id"]) for s in steps}
    assert {s: r.data.tags["mlflow.parentRunId"] for s, r in step_runs.items()} == dict.fromkeys(
        steps, first.info.run_id
    )
    assert {s: first.data.tags[f"step.{s}.reused"] for s in steps} == dict.fromkeys(steps, "false")
    assert first.data.tags["spark_master"].startswith("local")
    train_id = step_runs["train"].info.run_id
    version = client.get_model_version("sf_price", "1")
    assert version.run_id == train_id
    assert str(client.get_model_version_by_alias("sf_price", "champion").version) == "1"
    score_run = step_runs["score_batch"]
    assert score_run.data.tags["model_version"] == "1" and score_run.data.tags["model_run_id"] == train_id
    rows = spark.read.parquet(default_data).count()
    assert spark.read.parquet(scored).count() == score_run.data.metrics["rows_scored"] == rows

    assert {s: second.data.tags[f"step.{s}.run_id"] for s in steps} == {s: r.info.run_id for s, r in step_runs.items()}
    assert {s: second.data.tags[f"step.{s}.reused"] for s in steps} == dict.fromkeys(steps, "true")
    assert second.data.metrics["steps_run"] == 0
    assert [str(v.version) for v in client.search_model_versions("name='sf_price'")] == ["1"]
    assert "spark_master" not in second.data.tags  # the tag every session that starts sets: no JVM started

    export = _mlflow_run(
        project, "-e", "export_onnx", "-P", "model_uri=models:/sf_price@champion", "-P", "register_as=sf_price_onnx"
    )
    assert (
        client.get_run(launched_run_id(export)).data.tags["mlflow.runName"] == "export_onnx models:/sf_price@champion"
    )

    launched_run_id(
        _mlflow_run(project, "-e", "promote", "-P", "model_name=sf_price_onnx", "-P", "version=1", "-P", "force=true")
    )
    serving, url = model_server.start_serving_command(
        [MLFLOW, "run", ".", "--env-manager", "local", "-e", "serve", "-P", "model_uri=models:/sf_price_onnx@champion"]
        + ["-P", "port=0", "-P", "poll_seconds=0.5"],
        tmp_path / "serve.log",
        entry_env(),
        cwd=project,
    )
    answers, failures, done = [], [], threading.Event()

    def ask():
        while not done.is_set():
            try:
                answers.append(_ask(url, README_RECORD))
            except OSError as exc:  # HTTPError, a refused or dropped connection
                failures.append(exc)

    asker = threading.Thread(target=ask)
    try:
        version, served = _ask(url, README_RECORD)
        assert version == "1"
        # a new version of the export (the same graph registered again), promoted while requests flow
        mlflow.register_model(client.get_model_version("sf_price_onnx", "1").source, "sf_price_onnx")
        asker.start()
        launched_run_id(
            _mlflow_run(
                project, "-e", "promote", "-P", "model_name=sf_price_onnx", "-P", "version=2", "-P", "force=true"
            )
        )
        deadline = time.monotonic() + 60
        while not (answers and answers[-1][0] == "2") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        done.set()
        if asker.is_alive():
            asker.join()
        model_server.stop(serving)
    assert not failures, failures[:3]
    assert [v for i, (v, _) in enumerate(answers) if i == 0 or answers[i - 1][0] != v] == ["1", "2"]
    assert {p for _, p in answers} == {served}
    spark_model = mlflow.spark.load_model("models:/sf_price/1")
    expected = spark_model.transform(
        spark.createDataFrame([{k: (float(v) if isinstance(v, int) else v) for k, v in README_RECORD.items()}])
    ).first()["prediction"]
    assert abs(served - expected) <= 1e-6 * abs(expected)  # the export's documented parity tolerance

    # (no drift on a fresh sample, exit 0, is tests/monitor/test_check_drift.py's; here the path a scheduler
    # takes on drift)
    drifted = str(tmp_path / "drifted.parquet")
    launched_run_id(_mlflow_run(project, "-e", "generate_data", "-P", f"output_path={drifted}", "-P", "drift=true"))
    drift = _mlflow_run(
        project, "-e", "check_drift", "-P", "model_uri=models:/sf_price@champion", "-P", f"current_path={drifted}"
    )
    assert drift.returncode == 1  # `mlflow run` exits 1 for any non-zero code ...
    drift_run = client.get_run(launched_run_id(drift, "failed"))
    assert drift_run.data.tags["exit_code"] == "3"  # ... and the run keeps the script's own: drift found
    assert drift_run.data.tags["drift_verdict"].startswith("drift:")
    assert client.get_model_version("sf_price", "1").tags["drift_verdict"].startswith("drift:")
