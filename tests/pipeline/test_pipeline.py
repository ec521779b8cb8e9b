"""The pipeline entry point as `python pipeline.py` runs it (in-process, sharing the session's Spark): every
step a nested run of one parent, and reused, or not, as its inputs say."""

from __future__ import annotations

import os
import shutil
import sys

import pytest
from conftest import JVM_SIGNS, PROJECT_ROOT, last_line, run_entry, runs_of, script_in_process

from sparkmlops.core.spark import declare_master
from sparkmlops.pipeline.pipeline import STEPS, PipelineParams

NAME = "pipeline_price"
SMALL = ["--num_trees", "3", "--max_depth", "3"]


@pytest.fixture(scope="module")
def data(spark, default_data, tmp_path_factory):
    """400 rows of the generated data, and the same rows without a column the model needs."""
    folder = tmp_path_factory.mktemp("pipeline")
    rows = spark.read.parquet(default_data).orderBy("latitude", "longitude", "price").limit(400).coalesce(1)
    good, broken = str(folder / "listings.parquet"), str(folder / "no_bedrooms.parquet")
    rows.write.parquet(good)
    rows.drop("bedrooms").write.parquet(broken)
    return good, broken, str(folder / "scores")


def newest_parent(client):
    runs = runs_of(client, filter_string="tags.entry_point = 'pipeline'", max_results=5)
    return next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)


def pipeline(client, *options: str):
    """``python pipeline.py <options>`` in-process: (result, the pipeline's run)."""
    return script_in_process("pipeline.py", *options), newest_parent(client)


def steps_of(parent) -> dict[str, tuple[str, bool]]:
    tags = parent.data.tags
    return {
        s: (tags[f"step.{s}.run_id"], tags[f"step.{s}.reused"] == "true") for s in STEPS if f"step.{s}.run_id" in tags
    }


@pytest.mark.process
def test_a_second_run_reuses_every_step_and_starts_no_spark(client, data):
    good, _, scores = data
    command = [
        "--data_path",
        good,
        "--register_as",
        NAME,
        *SMALL,
        "--score_input_path",
        good,
        "--score_output_path",
        scores,
    ]
    first, parent = pipeline(client, *command)
    assert first.returncode == 0 and first.spark_sessions == 1, first.stderr[-3000:]  # one session for all steps
    ran = steps_of(parent)
    assert list(ran) == ["check_data", "train", "evaluate", "register", "promote", "score_batch"]
    assert not any(reused for _, reused in ran.values())
    for step, (run_id, _) in ran.items():
        child = client.get_run(run_id)
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id, step
        assert child.info.status == "FINISHED" and child.data.tags["pipeline_step_key"], step
    version = client.get_model_version_by_alias(NAME, "champion")
    assert version.run_id == ran["train"][0]
    trained = client.get_run(ran["train"][0])
    assert trained.data.tags["entry_point"] == "train" and trained.data.params["num_trees"] == "3"
    testing = [i.dataset.digest for i in trained.inputs.dataset_inputs if i.tags[0].value == "testing"]
    assert version.tags["test_digest"] == testing[0] and version.tags["data_digest"] == trained.data.tags["data_digest"]

    # In a process of its own, as `python pipeline.py` runs it: every step reused, and no JVM.
    second = run_entry([sys.executable, str(PROJECT_ROOT / "pipeline.py"), *command], timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert not [sign for sign in JVM_SIGNS if sign in second.stderr], second.stderr[-3000:]
    assert "Add type hints" not in second.stderr, second.stderr[-3000:]  # MLflow on the ONNX model class, at import
    again = newest_parent(client)
    assert "spark_master" not in again.data.tags, "a Spark session started"
    assert steps_of(again) == {step: (run_id, True) for step, (run_id, _) in ran.items()}
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1
    assert again.info.status == "FINISHED" and again.data.metrics["steps_reused"] == 6
    assert second.stdout.count("pipeline: ") == 7 and "reused run" in second.stdout

    shutil.rmtree(scores)  # the scores the reused step wrote are gone: it runs again, nothing before it
    rescored, fourth = pipeline(client, *command)
    assert rescored.returncode == 0, rescored.stderr[-3000:]
    assert {step: reused for step, (_, reused) in steps_of(fourth).items()} == {
        **{step: True for step in ran if step != "score_batch"},
        "score_batch": False,
    }

    # A new threshold the model still passes: evaluate alone runs, nothing is registered again, no JVM.
    gated, fifth = pipeline(client, *command, "--min_r2", "-0.5")
    assert gated.returncode == 0 and gated.spark_sessions == 0, gated.stderr[-3000:]
    regated = steps_of(fifth)
    assert regated.pop("evaluate")[1] is False
    assert regated == {step: (run_id, True) for step, (run_id, _) in steps_of(fourth).items() if step != "evaluate"}
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1

    changed, third = pipeline(client, *command, "--num_trees", "4")  # the last value of an option wins
    assert changed.returncode == 0, changed.stderr[-3000:]
    now = steps_of(third)
    assert now["check_data"] == (ran["check_data"][0], True), "the data and its checks did not change"
    assert all(not reused for step, (_, reused) in now.items() if step != "check_data")
    assert client.get_run(now["train"][0]).data.params["num_trees"] == "4"

    # Someone moves @champion by hand (a rollback): the same command does not promote again, and the
    # scores follow the alias.
    champion = str(client.get_model_version_by_alias(NAME, "champion").version)
    other = next(str(v.version) for v in client.search_model_versions(f"name = '{NAME}'") if str(v.version) != champion)
    client.set_registered_model_alias(NAME, "champion", other)
    rolled, sixth = pipeline(client, *command, "--num_trees", "4")
    assert rolled.returncode == 0, rolled.stderr[-3000:]
    after = steps_of(sixth)
    assert {step: reused for step, (_, reused) in after.items()} == {
        **{step: True for step in ran if step != "score_batch"},
        "score_batch": False,
    }
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == other
    assert client.get_run(after["score_batch"][0]).data.tags["model_version"] == other


def test_a_failed_step_fails_the_pipeline_and_the_fix_resumes_after_the_steps_before_it(client, data, tmp_path):
    good, broken, _ = data
    command = ["--data_path", good, "--register_as", NAME, *SMALL, "--score_output_path", str(tmp_path / "scores")]
    failed, parent = pipeline(client, *command, "--score_input_path", broken)
    assert failed.returncode == 2 and last_line(failed.stderr).startswith("error: "), failed.stderr[-3000:]
    assert parent.info.status == "FAILED" and parent.data.tags["exit_code"] == "2"
    score_run = runs_of(client, filter_string="tags.pipeline_step = 'score_batch'", max_results=1)[0]
    assert score_run.info.status == "FAILED" and score_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert steps_of(parent)["score_batch"] == (score_run.info.run_id, False)  # linked before it failed

    fixed, resumed = pipeline(client, *command, "--score_input_path", good)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    steps = steps_of(resumed)
    assert all(reused for step, (_, reused) in steps.items() if step != "score_batch")
    assert steps["score_batch"][1] is False


def test_a_model_below_the_threshold_is_not_registered(client, data):
    good, _, _ = data
    before = len(client.search_model_versions(f"name = '{NAME}'"))
    result, parent = pipeline(
        client, "--data_path", good, "--register_as", NAME, *SMALL, "--seed", "7", "--min_r2", "0.999"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not registered: r2" in result.stdout and "< min_r2 0.999" in result.stdout
    assert (
        list(steps_of(parent)) == ["check_data", "train", "evaluate"] and parent.data.tags["stopped_at"] == "evaluate"
    )
    assert len(client.search_model_versions(f"name = '{NAME}'")) == before


def test_rerun_forces_a_step_and_the_steps_that_use_it(client, data):
    good, _, _ = data
    command = ["--data_path", good, *SMALL]
    first, before = pipeline(client, *command)
    assert first.returncode == 0, first.stderr[-3000:]
    # the plan alone (made before Spark, as the entry point makes it): what each rerun choice forces
    planned = {
        rerun: {
            s.name
            for s in PipelineParams(data_path=good, num_trees=3, max_depth=3, rerun=rerun).validate().steps
            if s.reused is None
        }
        for rerun in ("", "evaluate", "check_data, evaluate", "all")
    }
    assert planned == {
        "": set(),
        "evaluate": {"evaluate"},
        "check_data, evaluate": {"check_data", "train", "evaluate"},
        "all": {"check_data", "train", "evaluate"},
    }
    declare_master("local[1]")  # another master (-P spark_master): another parallelism, another split
    try:
        elsewhere = PipelineParams(data_path=good, num_trees=3, max_depth=3).validate().steps
    finally:
        declare_master("")
    assert all(s.reused is None for s in elsewhere)
    forced, after = pipeline(client, *command, "--rerun", "train")
    assert forced.returncode == 0, forced.stderr[-3000:]
    was, now = steps_of(before), steps_of(after)
    assert now["check_data"] == (was["check_data"][0], True)
    assert not now["train"][1] and not now["evaluate"][1] and now["train"][0] != was["train"][0]

    part = next(p for p in os.listdir(good) if p.endswith(".parquet"))
    os.utime(os.path.join(good, part))  # the data touched: everything runs again
    exported, touched = pipeline(client, *command, "--export_onnx", "true")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert not any(reused for _, reused in steps_of(touched).values())
    export_run = client.get_run(steps_of(touched)["export_onnx"][0])
    assert export_run.info.status == "FINISHED" and export_run.data.tags["entry_point"] == "export_onnx"
    assert "export_onnx:" in exported.stdout and export_run.data.metrics["parity_rows"] > 0
    refused, _ = pipeline(client, *command, "--rerun", "tain")
    assert refused.returncode == 2 and "rerun names no step: tain" in last_line(refused.stderr)
    assert refused.spark_sessions == 0


def test_a_search_stands_in_for_train(client, data):
    good, _, _ = data
    name = "pipeline_searched"
    command = ["--data_path", good, "--register_as", name, "--search", "hyperopt", "--max_evals", "2"]
    result, parent = pipeline(client, *command, "--search_space", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    ran = steps_of(parent)
    assert list(ran) == ["check_data", "train", "evaluate", "register", "promote"]
    tuned = client.get_run(ran["train"][0])
    assert tuned.data.tags["entry_point"] == "tune_hyperopt" and tuned.data.params["max_evals"] == "2"
    trials = runs_of(client, filter_string=f"tags.mlflow.parentRunId = '{tuned.info.run_id}'")
    assert len(trials) == 2
    version = client.get_model_version_by_alias(name, "champion")
    assert version.run_id == tuned.info.run_id and version.tags["entry_point"] == "tune_hyperopt"
    best = {k[len("best_") :]: v for k, v in tuned.data.params.items() if k.startswith("best_")}
    assert best and all(version.tags[f"param.{k}"] == v for k, v in best.items())  # the refit's, as tune_* tags

    def plan(**changed):
        options = {
            "data_path": good,
            "register_as": name,
            "search": "hyperopt",
            "max_evals": 2,
            "search_space": "smoke",
        }
        return {s.name for s in PipelineParams(**{**options, **changed}).validate().steps if s.reused is None}

    assert plan() == set()
    assert plan(max_evals=3) == {"train", "evaluate", "register", "promote"}
    assert plan(search="") == {"train", "evaluate", "register", "promote"}  # train itself is another step
    client.delete_model_version(name, version.version)  # the registered version (and so @champion) is gone
    assert plan() == {"register", "promote"}


def test_a_search_over_spark_connect_is_refused_before_spark(client, data, monkeypatch):
    monkeypatch.setenv("SPARK_REMOTE", "sc://127.0.0.1:1")  # no server needed: refused before any session
    refused, _ = pipeline(client, "--data_path", data[0], "--search", "optuna")
    assert refused.returncode == 2 and refused.spark_sessions == 0
    assert "search=optuna needs a classic Spark session" in last_line(refused.stderr)
