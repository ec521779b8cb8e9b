"""Model registry and promotion against a real SQLite registry: register versions from train, gate them
into @champion, refuse a worse one, force a rollback, score by alias, and every bad input."""

import mlflow
import pytest
from conftest import (
    assert_refused,
    in_tracked_run,
    last_line,
    newest_run,
    python_script,
    script_in_process,
)

from sparkmlops.core import environment, model_registry, tracking
from sparkmlops.core.errors import UserInputError
from sparkmlops.data import splits
from sparkmlops.inference import resolve
from sparkmlops.registry.promote import (
    PromoteParams,
    beats,
    promote_and_log,
    relative_improvement,
)
from sparkmlops.score.score_batch import BatchParams, predict_batch
from sparkmlops.train.train import TrainParams, train_and_log

NAME = "promote-test-price"


def _train(spark, data_path, **model_params):
    params = TrainParams(data_path=data_path, register_as=NAME, **model_params)
    return in_tracked_run(params, lambda checked: train_and_log(spark, checked))


def _promote(spark, **options):
    params = PromoteParams(model_name=NAME, **options)
    return in_tracked_run(params, lambda plan: promote_and_log(spark if plan.needs_evaluation else None, plan))


def _aliases(client, name=NAME) -> dict:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


@pytest.fixture(scope="module")
def versions(spark, default_data):
    """Three versions of one model on the generated data, same split: v1 fair, v2 best, v3 worst."""
    trained = [
        _train(spark, default_data, num_trees=5, max_depth=3),
        _train(spark, default_data, num_trees=20, max_depth=8),
        _train(spark, default_data, num_trees=1, max_depth=1),
    ]
    return [(run_id, result) for run_id, result in trained]


def test_registered_versions_say_what_produced_them(client, versions, default_data):
    for number, (run_id, result) in enumerate(versions, start=1):
        assert result.registered_version == str(number)
        version = client.get_model_version(NAME, str(number))
        tags = version.tags
        assert version.run_id == run_id and tags["run_id"] == run_id and tags["entry_point"] == "train"
        assert tags["git_commit"] == environment.git_state()["git_commit"] != "unknown"
        assert tags["data_digest"] == client.get_run(run_id).data.tags["data_digest"] == result.digests["full"]
        assert tags["param.num_trees"] == str([5, 20, 1][number - 1]) and tags["param.seed"] == "42"
        assert float(tags["metric.rmse"]) == pytest.approx(result.metrics["rmse"], rel=1e-5)
        assert run_id in version.description and "rmse=" in version.description
        assert client.get_run(run_id).data.tags["registered_model_version"] == str(number)
    rmse = [result.metrics["rmse"] for _, result in versions]
    assert rmse[1] < rmse[0] < rmse[2]  # the scenario below relies on this order


def test_promotion_gate_rollback_and_scoring_by_alias(spark, client, versions, default_data, tmp_path):
    (run1, train1), (run2, train2), _ = versions
    # No champion yet: version 1 becomes champion (and challenger), with its numbers logged.
    promote_run, first = _promote(spark, version="1")
    assert first.decision == "promoted_first" and _aliases(client) == {"champion": "1", "challenger": "1"}
    logged = client.get_run(promote_run).data
    # Both models share the split, so the held-out rows are exactly train's test split.
    assert logged.metrics["heldout_rows"] == client.get_run(run1).data.metrics["test_rows"]
    assert logged.metrics["candidate_rmse"] == pytest.approx(train1.metrics["rmse"], rel=1e-9)

    # The newest (v3, worse) is refused: challenger moves, champion stays, the version says why.
    promote_run, refused = _promote(spark)
    assert refused.decision == "rejected" and refused.candidate_version == "3"
    assert _aliases(client) == {"champion": "1", "challenger": "3"}
    assert refused.metrics["candidate_rmse"] > refused.metrics["champion_rmse"] and refused.metrics["improvement"] < 0
    tags = client.get_model_version(NAME, "3").tags
    assert tags["promotion_decision"] == "rejected" and tags["promotion_run_id"] == promote_run
    assert client.get_run(promote_run).data.tags["decision"] == "rejected"

    # v2 is better than v1, but not by 90%: refused; without the margin it is promoted.
    _, margin = _promote(spark, version="2", min_improvement=0.9)
    assert margin.decision == "rejected" and 0 < margin.metrics["improvement"] < 0.9
    assert _aliases(client)["champion"] == "1"
    promote_run, promoted = _promote(spark, version="2")
    assert promoted.decision == "promoted" and _aliases(client) == {"champion": "2", "challenger": "2"}
    assert promoted.metrics["champion_rmse"] == pytest.approx(train1.metrics["rmse"], rel=1e-9)
    assert promoted.metrics["candidate_rmse"] == pytest.approx(train2.metrics["rmse"], rel=1e-9)
    assert client.get_model_version(NAME, "1").tags["demoted_by_version"] == "2"

    # Promoting the champion itself changes nothing.
    _, same = _promote(spark, version="champion")
    assert same.decision == "unchanged" and _aliases(client)["champion"] == "2"

    # Rollback: force v1 back, no evaluation.
    promote_run, rollback = _promote(spark, version="1", force=True)
    assert rollback.decision == "forced" and rollback.metrics == {}
    assert _aliases(client) == {"champion": "1", "challenger": "2"}
    assert client.get_model_version(NAME, "2").tags["demoted_by_version"] == "1"
    assert client.get_model_version(NAME, "1").tags["promotion_decision"] == "forced"

    # score_batch by alias scores with the champion (v1): same predictions as v1's own model.
    out = str(tmp_path / "by-champion")
    params = BatchParams(f"models:/{NAME}@champion", default_data, out)
    run_id, summary = in_tracked_run(params, lambda model: predict_batch(spark, params, model))
    assert client.get_run(run_id).data.tags["model_version"] == "1"
    data = spark.read.parquet(default_data)
    expected = train1.model.transform(data).select(*data.columns, "prediction")
    got = spark.read.parquet(out)
    assert summary["rows_scored"] == expected.count()
    assert got.exceptAll(expected).count() == 0 and expected.exceptAll(got).count() == 0


def test_two_promotions_at_once_the_later_is_refused(spark, client, versions):
    """Two promotions planned against the same @champion (both read it before either moved it): the first
    to finish moves it; the other must not overwrite that decision. It exits 1 (run again) with one line,
    and changes nothing: no alias, no tag on its candidate."""
    from sparkmlops.core.errors import JobFailed

    name = "promote-test-race"
    for run_id, result in (versions[2], versions[0], versions[1]):  # v1 worst (1x1), v2 5x3, v3 best (20x8)
        model_registry.register_model(
            result.model_uri,
            name,
            run_id=run_id,
            entry_point="train",
            params=TrainParams().model_params(),
            metrics=result.metrics,
            digests=result.digests,
            data_path=result.data_path,
        )
    model_registry.set_alias(name, "champion", "1")
    first = PromoteParams(model_name=name, version="2").validate()
    second = PromoteParams(model_name=name, version="3").validate()
    assert str(first.champion.version) == str(second.champion.version) == "1"

    with tracking.tracked_run("promote race first"):
        assert promote_and_log(spark, first).decision == "promoted"
    assert _aliases(client, name) == {"champion": "2", "challenger": "2"}
    with (
        pytest.raises(
            JobFailed,
            match=r"@champion of 'promote-test-race' moved from v1 to v2 while this "
            r"promotion of v3 ran",
        ),
        tracking.tracked_run("promote race second") as run,
    ):
        promote_and_log(spark, second)
    assert _aliases(client, name) == {"champion": "2", "challenger": "2"}, "the later promotion changed aliases"
    assert not any(k.startswith("promotion_") for k in client.get_model_version(name, "3").tags)
    refused = client.get_run(run.info.run_id)
    assert refused.info.status == "FAILED" and refused.data.tags["exit_code"] == "1"
    assert "decision" not in refused.data.tags


def test_heldout_rows_exclude_both_training_splits(spark, client, versions, default_data):
    """Versions split with different seeds: only rows in both test splits are scored."""
    from sparkmlops.registry.promote import heldout_rows

    params = TrainParams(data_path=default_data, register_as="promote-test-seeds", num_trees=2, max_depth=2, seed=7)
    in_tracked_run(params, lambda checked: train_and_log(spark, checked))
    other_seed = client.get_model_version("promote-test-seeds", "1")
    data = splits.load_labelled(spark, default_data, "price")
    heldout, notes = heldout_rows(
        data, [("candidate", other_seed), ("@champion", client.get_model_version(NAME, "1"))], default_data
    )
    train42, test42 = splits.split_train_test(data.df, 0.8, 42)
    train7, test7 = splits.split_train_test(data.df, 0.8, 7)
    assert heldout.count() == test42.intersectAll(test7).count() > 0
    assert heldout.intersectAll(train42).count() == 0 and heldout.intersectAll(train7).count() == 0
    assert "seed 7" in notes[0] and "seed 42" in notes[1]

    # Data the versions never saw is used whole.
    fresh = splits.load_labelled(spark, default_data, "price")
    fresh.df, fresh.digest = fresh.df.limit(500), "another-digest"
    heldout, notes = heldout_rows(fresh, [("candidate", other_seed)], default_data)
    assert heldout.count() == 500 and "trained on other data" in notes[0]


def test_stream_on_champion_follows_a_promotion_on_restart(spark, client, versions, default_data, tmp_path):
    from sparkmlops.score.score_stream import StreamParams, run_stream

    (_, train1), (_, train2), _ = versions
    from pyspark.sql import functions as F

    before = _aliases(client).get("champion")
    source = spark.read.parquet(default_data).limit(400).cache()
    halves = F.xxhash64(*source.columns) % 2 == 0
    inbox, out = tmp_path / "inbox", str(tmp_path / "out")
    source.where(halves).coalesce(2).write.parquet(str(inbox))
    params = StreamParams(f"models:/{NAME}@champion", str(inbox), out, str(tmp_path / "ckpt"))
    model_registry.set_alias(NAME, "champion", "1")
    resolved = resolve.resolve_model(params.model_uri)
    assert resolved.identity == f"models:/{NAME}@champion" and resolved.load_uri == f"models:/{NAME}/1"
    first_run, first = in_tracked_run(params, lambda model: run_stream(spark, params, model))

    model_registry.set_alias(NAME, "champion", "2")  # a promotion while the stream is stopped
    rest = source.where(~halves)
    rest.coalesce(2).write.mode("append").parquet(str(inbox))
    second_run, second = in_tracked_run(params, lambda model: run_stream(spark, params, model))
    if before:
        model_registry.set_alias(NAME, "champion", before)
    else:
        client.delete_registered_model_alias(NAME, "champion")

    assert client.get_run(first_run).data.tags["model_version"] == "1"
    assert client.get_run(second_run).data.tags["model_version"] == "2"
    assert first["rows_scored"] + second["rows_scored"] == spark.read.parquet(out).count() == source.count()
    scored = spark.read.parquet(out)
    features = [c for c in scored.columns if c != "prediction"]
    expected = train2.model.transform(rest).select("prediction", *features)
    scored_by_v2 = scored.join(rest, features, "left_semi").select("prediction", *features)
    assert scored_by_v2.count() == rest.count() and scored_by_v2.exceptAll(expected).count() == 0


def test_relative_improvement_for_each_metric():
    assert relative_improvement("rmse", 90.0, 100.0) == pytest.approx(0.1)
    assert relative_improvement("mae", 110.0, 100.0) == pytest.approx(-0.1)
    assert relative_improvement("r2", 0.33, 0.30) == pytest.approx(0.1)
    assert relative_improvement("r2", -0.2, -0.1) == pytest.approx(-1.0)
    assert relative_improvement("rmse", 1.0, 0.0) == float("-inf")
    assert beats(0.1, 0.05) and not beats(0.04, 0.05) and not beats(0.0, 0.0) and beats(1e-9, 0.0)


@pytest.fixture(scope="module")
def odd_models(client, pyfunc_model_uri):
    """A registered model whose only version is not a Spark model, and one with no versions."""
    mlflow.register_model(pyfunc_model_uri, "promote-test-pyfunc")
    client.create_registered_model("promote-test-empty")
    return "promote-test-pyfunc", "promote-test-empty"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"model_name": ""}, "model_name is empty"),
        ({"model_name": "a/b"}, "cannot contain '/', ':' or '@'"),
        ({"model_name": "no-such-model"}, "no registered model 'no-such-model' (registered models:"),
        ({"model_name": NAME, "version": "99"}, f"'{NAME}' has no version 99"),
        ({"model_name": NAME, "version": "@no-such-alias"}, "has no alias '@no-such-alias'"),
        ({"model_name": NAME, "metric": "mape"}, "unknown metric 'mape'"),
        ({"model_name": NAME, "min_improvement": 1.5}, "min_improvement is a relative gain in [0, 1)"),
        ({"model_name": NAME, "force": True}, "force=true moves @champion without the gate, so it needs the version"),
        ({"model_name": NAME, "data_path": "/no/such/eval.parquet"}, "'/no/such/eval.parquet' does not exist"),
        ({"model_name": "promote-test-pyfunc"}, "(the candidate) is not a Spark model"),
        ({"model_name": "promote-test-empty"}, "'promote-test-empty' has no versions"),
    ],
)
def test_bad_input_is_one_line_and_changes_no_alias(client, versions, odd_models, options, message):
    before = _aliases(client)
    with pytest.raises(UserInputError) as raised:
        PromoteParams(**options).validate()
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert _aliases(client) == before


def test_force_puts_a_version_of_any_flavor_at_champion(client, odd_models):
    """What serve reads: the export (a pyfunc) of a model, forced to @champion of its own registered name."""
    result = script_in_process("promote.py", "--model_name", odd_models[0], "--version", "1", "--force", "true")
    assert result.returncode == 0 and result.spark_sessions == 0, result.stderr[-2000:]
    assert str(client.get_model_version_by_alias(odd_models[0], "champion").version) == "1"


def test_evaluation_data_without_the_model_columns_changes_no_alias(spark, client, versions, default_data, tmp_path):
    path = str(tmp_path / "narrow.parquet")
    spark.read.parquet(default_data).select("price", "bedrooms", "room_type").write.parquet(path)
    before = _aliases(client)
    with pytest.raises(UserInputError, match="does not match the model's signature: missing columns"):
        _promote(spark, version="2", data_path=path)
    assert _aliases(client) == before


def test_promote_script_refuses_before_spark_and_fails_the_run(client, versions):
    result = script_in_process("promote.py", "--model_name", NAME, "--version", "42")
    run = assert_refused(result, client, f"registered model '{NAME}' has no version 42")
    assert run.data.params["model_name"] == NAME


@pytest.mark.process
def test_promote_script_on_an_empty_registry(tmp_path):
    store = f"sqlite:///{tmp_path / 'empty.db'}"
    result = python_script("promote.py", "--model_name", "sf_price", env={"MLFLOW_TRACKING_URI": store})
    assert result.returncode == 2, result.stderr[-2000:]
    assert last_line(result.stderr) == (
        "error: no registered model 'sf_price': the model registry is empty; "
        "register one with: mlflow run . -e train -P register_as=<name>."
    )
    runs = mlflow.MlflowClient(store).search_runs(
        [mlflow.MlflowClient(store).get_experiment_by_name("sparkmlops-tests").experiment_id]
    )
    assert [r.info.status for r in runs] == ["FAILED"]


@pytest.mark.process
def test_promote_script_force_rollback_needs_no_spark(client, versions):
    before = _aliases(client)
    # no Java at all: a rollback touches only the registry, so it must not even look for one
    result = python_script(
        "promote.py", "--model_name", NAME, "--version", "3", "--force", "true", env={"JAVA_HOME": "/nonexistent-jdk"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "forced: @champion -> v3" in last_line(result.stdout)
    assert _aliases(client)["champion"] == "3"
    run = newest_run(client)
    assert run.data.tags["java_version"] == "none" and "spark_master" not in run.data.tags  # no session
    assert run.data.tags["mlflow.runName"] == "promote promote-test-price v3 force"
    model_registry.set_alias(NAME, "champion", before["champion"])  # leave the registry as the other tests expect


def test_register_as_is_checked_before_spark(client):
    assert_refused(
        script_in_process("train.py", "--register_as", "bad:name"),
        client,
        "register_as 'bad:name' is not a valid registered model name",
    )
