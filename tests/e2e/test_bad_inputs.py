"""Every entry point that reads data against the one catalogue of broken inputs (tests/e2e/bad_inputs.py).

Each pair runs the entry point's own script in-process (``script_in_process``: its click options, checks,
tracked run, one-line error and exit code, sharing the session's Spark) and checks what the catalogue
says it must give: the exit code, the one line, the run's status and ``exit_code`` tag, and the output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import bad_inputs
import pytest
from bad_inputs import DRIFT, EXPECTED, OK
from conftest import SHARED_TRAIN_PARAMS, last_line, runs_of, script_in_process

from sparkmlops.core import model_registry

MODEL_NAME = "bad_inputs_price"
CLASSIFIER_NAME = "bad_inputs_room_type"
SMALL_FOREST = ["--num_trees", "3", "--max_depth", "3"]
SMOKE_SEARCH = ["--max_evals", "1", "--search_space", "smoke"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("bad-inputs")


@pytest.fixture(scope="module")
def base_data(spark, default_data, folder) -> str:
    """400 good rows of the embedded dataset: the source of every broken variant."""
    path = folder / "base.parquet"
    spark.read.parquet(default_data).orderBy("latitude", "longitude", "price").limit(400).coalesce(1).write.parquet(
        str(path)
    )
    return str(path)


def entry_point_run(client, script: str):
    """The newest top-level run of the script's entry point: searches and per-group training add nested
    runs, which start later (and per-group ones carry the entry_point tag too)."""
    runs = runs_of(client, filter_string=f"tags.entry_point = '{script.removesuffix('.py')}'", max_results=100)
    return next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)


@pytest.fixture(scope="module")
def models(trained_run, sklearn_model, per_group_run):
    """The models the scorers, promote and export_onnx use: the session's shared ones (trained on the
    generated data the good rows come from). The Spark model is registered as train registers it."""
    run_id, result = trained_run
    model_registry.register_model(
        result.model_uri,
        MODEL_NAME,
        run_id=run_id,
        entry_point="train",
        params=SHARED_TRAIN_PARAMS.model_params(),
        metrics=result.metrics,
        digests=result.digests,
        data_path=result.data_path,
    )
    return {"spark": f"runs:/{run_id}/model", "sklearn": sklearn_model[1], "per_group": per_group_run[0]}


@pytest.fixture(scope="module")
def case_inputs(spark, base_data, folder):
    """Each case's input, built once (lazily) for every entry point."""
    built: dict[str, str] = {}

    def get(case_id: str) -> str:
        if case_id not in built:
            case_folder = folder / case_id
            case_folder.mkdir()
            built[case_id] = bad_inputs.make_case(spark, case_id, base_data, case_folder)
        return built[case_id]

    return get


def _original_run(spark, client, case_id: str, data_path: str, base_data: str, project, work) -> tuple[str, str]:
    """(run id, data path) of a run for reproduce to reproduce, made as it would really exist: a train run
    (the script in-process, as `python train.py` makes it) at the commit of ``project`` (this checkout's
    files, committed) from a clean tree. On data train accepts, it trained on that very data. Data train
    refuses cannot have been trained on: the run trained on the good rows at a path of the same kind (a
    folder, or a .csv file), which then came to hold the broken data."""
    import shutil

    _, commit = project
    path = data_path
    if EXPECTED[case_id]["train"] != OK:
        path = str(work / "listings" / Path(data_path).name)
        Path(path).parent.mkdir()
        good = spark.read.parquet(base_data)
        if path.endswith(".csv"):
            good.toPandas().to_csv(path, index=False)
        else:
            good.coalesce(1).write.parquet(path)
    result = script_in_process("train.py", "--data_path", path, *SMALL_FOREST)
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = entry_point_run(client, "train.py").info.run_id
    client.set_tag(run_id, "git_commit", commit)  # the committed copy of this very tree
    client.set_tag(run_id, "git_dirty", "false")
    if path != data_path:  # the data at the run's path changes
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        shutil.copytree(data_path, path) if os.path.isdir(data_path) else shutil.copy(data_path, path)
    return run_id, path


def _command(entry: str, path: str, output: str, models: dict, base_data: str, client, work) -> list[str]:
    if entry == "train":
        return ["train.py", "--data_path", path, *SMALL_FOREST]
    if entry == "train_sklearn":
        return ["train_sklearn.py", "--data_path", path, *SMALL_FOREST]
    if entry == "tune_hyperopt_mllib":
        return ["tune_hyperopt.py", "--data_path", path, *SMOKE_SEARCH]
    if entry == "tune_hyperopt_sklearn":
        return ["tune_hyperopt.py", "--data_path", path, *SMOKE_SEARCH, "--engine", "sklearn"]
    if entry == "tune_optuna":
        return ["tune_optuna.py", "--data_path", path, *SMOKE_SEARCH]
    if entry == "tune_grid":
        return [
            "tune_grid.py",
            "--data_path",
            path,
            "--param_grid",
            '{"num_trees": [3], "max_depth": [3]}',
            "--cv",
            "2",
            "--parallelism",
            "1",
        ]
    if entry == "train_per_group":
        return ["train_per_group.py", "--data_path", path, "--group_col", "room_type", "--min_rows", "5", *SMALL_FOREST]
    if entry == "score_batch":
        return ["score_batch.py", "--model_uri", models["spark"], "--input_path", path, "--output_path", output]
    if entry == "score_stream":
        return [
            "score_stream.py",
            "--model_uri",
            models["spark"],
            "--input_path",
            path,
            "--output_path",
            output,
            "--checkpoint_path",
            str(work / "checkpoint"),
        ]
    if entry == "score_pandas_udf":
        return ["score_pandas_udf.py", "--model_uri", models["sklearn"], "--input_path", path, "--output_path", output]
    if entry == "score_per_group":
        return ["score_per_group.py", "--run_id", models["per_group"], "--input_path", path, "--output_path", output]
    if entry == "promote":
        # No @champion, so every pair evaluates the candidate on its data (an earlier pair may have
        # promoted it, and a candidate that is already @champion needs no data at all).
        if "champion" in client.get_registered_model(MODEL_NAME).aliases:
            client.delete_registered_model_alias(MODEL_NAME, "champion")
        return ["promote.py", "--model_name", MODEL_NAME, "--data_path", path]
    if entry == "export_onnx":
        return ["export_onnx.py", "--model_uri", models["spark"], "--parity_data_path", path]
    if entry == "check_drift":
        return ["check_drift.py", "--reference_path", base_data, "--current_path", path]
    if entry == "pipeline":  # check, train, evaluate (nothing to register)
        return ["pipeline.py", "--data_path", path, *SMALL_FOREST]
    if entry == "reproduce":
        raise KeyError("reproduce's pairs are test_bad_inputs_reproduce.py's")
    raise KeyError(entry)


@pytest.mark.parametrize("case_id, entry", bad_inputs.pairs([e for e in bad_inputs.ENTRY_POINTS if e != "reproduce"]))
def test_broken_input(spark, client, models, base_data, case_inputs, tmp_path, case_id, entry):
    path = case_inputs(case_id)
    output = bad_inputs.output_path_for(case_id, path, tmp_path)
    command = _command(entry, path, output, models, base_data, client, tmp_path)
    check_outcome(spark, client, case_id, entry, path, output, command)


@pytest.fixture(scope="module")
def classifier(client, base_data) -> str:
    """A room_type classifier trained on the good rows, registered as train registers it: its model URI."""
    result = script_in_process(
        "train.py",
        "--data_path",
        base_data,
        "--label_col",
        "room_type",
        "--register_as",
        CLASSIFIER_NAME,
        *SMALL_FOREST,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return f"runs:/{entry_point_run(client, 'train.py').info.run_id}/model"


def _class_command(entry: str, path: str, output: str, classifier: str, client) -> list[str]:
    label = ["--data_path", path, "--label_col", "room_type", "--task", "classification"]
    if entry == "train":
        return ["train.py", *label, *SMALL_FOREST]
    if entry in ("tune_hyperopt_mllib", "tune_optuna"):
        return [f"{entry.removesuffix('_mllib')}.py", *label, *SMOKE_SEARCH]
    if entry == "score_batch":
        return ["score_batch.py", "--model_uri", classifier, "--input_path", path, "--output_path", output]
    if entry == "promote":
        if "champion" in client.get_registered_model(CLASSIFIER_NAME).aliases:
            client.delete_registered_model_alias(CLASSIFIER_NAME, "champion")
        return ["promote.py", "--model_name", CLASSIFIER_NAME, "--data_path", path]
    if entry == "check_drift":
        return ["check_drift.py", "--model_uri", classifier, "--current_path", path]
    raise KeyError(entry)


@pytest.mark.parametrize("case_id, entry", bad_inputs.class_pairs())
def test_broken_classification_input(spark, client, classifier, base_data, folder, tmp_path, case_id, entry):
    case_folder = folder / "classification" / case_id
    if not case_folder.exists():  # built once for every entry point
        case_folder.mkdir(parents=True)
        bad_inputs.make_class_case(spark, case_id, base_data, case_folder)
    path = str(case_folder / f"{case_id}.parquet")
    output = str(tmp_path / "scores")
    command = _class_command(entry, path, output, classifier, client)
    result = check_outcome(
        spark, client, case_id, entry, path, output, command, bad_inputs.CLASS_EXPECTED[case_id][entry]
    )
    if entry == "check_drift":  # the label's shift is what drifted, the features are the good rows'
        assert "room_type (" in last_line(result.stdout) and "1 of" in last_line(result.stdout), result.stdout


def check_outcome(
    spark, client, case_id: str, entry: str, path: str, output: str, command: list[str], expected: str = ""
):
    """Run the entry point's script in-process and check what the catalogue says it must give."""
    expected = expected or EXPECTED[case_id][entry]
    result = script_in_process(*command)
    run = entry_point_run(client, command[0])
    if expected in (OK, DRIFT):
        code = 0 if expected == OK else 3
        assert result.returncode == code, result.stderr[-3000:]
        assert run.info.status == "FINISHED" and run.data.tags["exit_code"] == str(code)
        if entry in bad_inputs.SCORERS:
            scored = spark.read.parquet(output)
            rows = spark.read.parquet(path).count()
            assert scored.count() == rows
            assert scored.filter("prediction IS NOT NULL").count() == rows
        if entry == "check_drift":
            table = run.data.metrics
            assert (table["drifted_features"] > 0) == (expected == DRIFT)
        if "smoke" in command:  # the search kept to its smoke space (engine=sklearn has no model_type)
            best = run.data.params
            assert int(best["best_num_trees"]) <= 10 and int(best["best_max_depth"]) <= 4
            assert best.get("best_model_type", "rf") == "rf", best
        if entry == "reproduce":
            assert run.data.tags["reproduction_verdict"].startswith("reproduced: "), run.data.tags
        return result
    phrase = expected.removeprefix("refused: ")
    assert result.returncode == 2, (result.stdout[-1000:], result.stderr[-3000:])
    line = last_line(result.stderr)
    assert line.startswith("error: ") and phrase in line, result.stderr[-3000:]
    assert "\n" not in run.data.tags["error"] and phrase in run.data.tags["error"]
    assert run.info.status == "FAILED" and run.data.tags["exit_code"] == "2"
    if entry == "score_stream":  # a stream stopped at its first batch may have created its sink, never committed
        metadata = Path(output) / "_spark_metadata"
        assert not metadata.exists() or not [n for n in os.listdir(metadata) if n.isdigit()]
    elif entry in bad_inputs.SCORERS:
        assert not os.path.exists(output)
    return result


def test_doc_is_generated_from_the_catalogue():
    assert bad_inputs.DOC.read_text() == bad_inputs.render_doc(), "run: python tests/e2e/bad_inputs.py"


def test_every_case_has_an_outcome_for_every_entry_point():
    assert [c.id for c in bad_inputs.CASES] == list(EXPECTED)
    for case_id, outcomes in EXPECTED.items():
        assert sorted(outcomes) == sorted(bad_inputs.ENTRY_POINTS), case_id
    assert [c.id for c in bad_inputs.CLASS_CASES] == list(bad_inputs.CLASS_EXPECTED)
    for case_id, outcomes in bad_inputs.CLASS_EXPECTED.items():
        assert sorted(outcomes) == sorted(bad_inputs.CLASS_ENTRY_POINTS), case_id
    json.dumps([EXPECTED, bad_inputs.CLASS_EXPECTED])  # plain data
