"""One source of truth for parameters: MLproject, the scripts' click options, the README's entry-point
table and the choice tables agree (names, types, defaults, choices)."""

import re

import pytest
import yaml
from conftest import PROJECT_ROOT

from sparkmlops.core import compat
from sparkmlops.data import generate_data
from sparkmlops.fitting import metrics, sklearn_forest, spark_pipeline
from sparkmlops.reproduce import reproduce
from sparkmlops.score import score_pandas_udf, score_per_group
from sparkmlops.tune import search


def _mlproject():
    return yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())


SCRIPTS = {
    "main": "train.py",
    "train": "train.py",
    "generate_data": "generate_data.py",
    "score_batch": "score_batch.py",
    "score_stream": "score_stream.py",
    "tune_hyperopt": "tune_hyperopt.py",
    "tune_optuna": "tune_optuna.py",
    "tune_grid": "tune_grid.py",
    "promote": "promote.py",
    "export_onnx": "export_onnx.py",
    "train_sklearn": "train_sklearn.py",
    "score_pandas_udf": "score_pandas_udf.py",
    "train_per_group": "train_per_group.py",
    "score_per_group": "score_per_group.py",
    "check_drift": "check_drift.py",
    "reproduce": "reproduce.py",
}


def _script_module(entry: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{entry}", PROJECT_ROOT / SCRIPTS[entry])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mlproject_entry_points_match_the_scripts_options():
    """Every MLproject parameter is an option of its script with the same default, and vice versa."""
    project = _mlproject()
    assert project["conda_env"] == "conda.yaml"
    assert set(project["entry_points"]) == set(SCRIPTS)
    for entry in SCRIPTS:
        module = _script_module(entry)
        options = {p.name: p.default for p in module.main.params}
        declared = project["entry_points"][entry]["parameters"]
        assert set(declared) == set(options), entry
        for name, decl in declared.items():
            if "default" in decl:
                default = options[name]
                # MLflow has no boolean type: booleans are declared as the strings click parses.
                expected = str(default).lower() if isinstance(default, bool) else str(default)
                assert str(decl["default"]) == expected, (entry, name)
            assert f"--{name} {{{name}}}" in project["entry_points"][entry]["command"], (entry, name)


def test_train_contract_defaults():
    params = _mlproject()["entry_points"]["train"]["parameters"]
    assert {k: v.get("default") for k, v in params.items()} == {
        "data_path": "",
        "label_col": "price",
        "model_type": "rf",
        "num_trees": 100,
        "max_depth": 5,
        "max_bins": 40,
        "min_instances_per_node": 1,
        "feature_subset_strategy": "auto",
        "log_label": "false",
        "seed": 42,
        "train_fraction": 0.8,
        "register_as": "",
        "spark_master": "",
    }
    assert _mlproject()["entry_points"]["main"] == _mlproject()["entry_points"]["train"]


def test_every_entry_point_command_parses_with_its_script(tmp_path):
    """MLflow's rendering of each entry point's command (defaults, required values, an empty string)
    is accepted by the script's options: what `mlflow run -e <entry>` will execute."""
    import shlex

    project = compat.load_mlflow_project(str(PROJECT_ROOT))
    for entry, script in SCRIPTS.items():
        entry_point = project.get_entry_point(entry)
        required = {name: f"/x/{name}" for name, p in entry_point.parameters.items() if p.default is None}
        argv = shlex.split(entry_point.compute_command(required, str(tmp_path)))
        assert argv[:2] == ["python", script], entry
        module = _script_module(entry)
        context = module.main.make_context(script, argv[2:])
        assert set(context.params) == set(entry_point.parameters), entry
        for name, value in required.items():
            assert context.params[name] == value, (entry, name)


# MLproject's types as click reads them; MLflow has no boolean type, so flags are strings click parses.
CLICK_TYPES = {"string": {"text", "boolean"}, "int": {"integer"}, "float": {"float"}, "path": {"text"}, "uri": {"text"}}


def test_parameter_types_agree():
    project = _mlproject()
    for entry in SCRIPTS:
        options = {p.name: p for p in _script_module(entry).main.params}
        for name, decl in project["entry_points"][entry]["parameters"].items():
            assert options[name].type.name in CLICK_TYPES[decl["type"]], (entry, name, options[name].type.name)


def test_required_parameters_are_checked_by_the_script():
    """A parameter without a default in MLproject is one `mlflow run` demands; the script's own default
    is empty, so `python <script>.py` without it fails on the script's check, not on a None."""
    project = _mlproject()
    for entry in SCRIPTS:
        options = {p.name: p for p in _script_module(entry).main.params}
        for name, decl in project["entry_points"][entry]["parameters"].items():
            if "default" not in decl:
                assert options[name].default == "", (entry, name)


@pytest.mark.parametrize(
    "entry, option, table",
    [
        ("train", "model_type", spark_pipeline.MODEL_TYPES),
        ("train_sklearn", "model_type", sklearn_forest.MODEL_TYPES),
        ("train_per_group", "model_type", sklearn_forest.MODEL_TYPES),
        ("tune_hyperopt", "engine", search.ENGINES),
        ("tune_hyperopt", "metric", metrics.METRICS),
        ("tune_optuna", "engine", search.ENGINES),
        ("tune_optuna", "metric", metrics.METRICS),
        ("tune_grid", "metric", metrics.METRICS),
        ("promote", "metric", metrics.METRICS),
        ("score_pandas_udf", "method", score_pandas_udf.METHODS),
        ("score_per_group", "unknown_groups", score_per_group.UNKNOWN_GROUPS),
        ("reproduce", "env_manager", reproduce.ENV_MANAGERS),
        ("generate_data", "dataset", generate_data.DATASETS),
    ],
)
def test_every_choice_is_in_the_help_and_the_default_is_one(entry, option, table):
    params = {p.name: p for p in _script_module(entry).main.params}
    help_text = params[option].help
    assert all(re.search(rf"\b{re.escape(value)}\b", help_text) for value in table), (entry, option, help_text)
    assert params[option].default in table


def test_the_book_model_types_include_xgboost():
    """The omission that started this: train's help must offer every model_type train accepts."""
    help_text = {p.name: p for p in _script_module("train").main.params}["model_type"].help
    assert "xgboost" in help_text and "gbt" in help_text and "rf" in help_text


def test_readme_lists_every_entry_point_once():
    readme = (PROJECT_ROOT / "README.md").read_text()
    rows = re.findall(r"^\| \[?`([a-z_]+)`", readme, flags=re.M)
    for entry in set(SCRIPTS) - {"main"}:  # main is train, said in train's row
        assert rows.count(entry) == 1, (entry, rows)
    assert "`main` is `train`" in readme


def test_the_parameter_reference_is_generated_from_the_options():
    from tools import parameters_doc

    assert parameters_doc.DOC.read_text() == parameters_doc.render(), "run: python -m tools.parameters_doc"
