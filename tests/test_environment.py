"""Pins, Java detection and the MLproject contract."""

import os
import stat

import pytest
import yaml
from conftest import PROJECT_ROOT

from sparkmlops.core import compat, environment
from sparkmlops.core.errors import UserInputError


def test_conda_yaml_pip_section_equals_requirements_txt():
    pins = list(environment.read_pins().values())
    assert environment.conda_pip_pins() == pins, "run `make pins` to copy requirements.txt into conda.yaml"
    conda = yaml.safe_load((PROJECT_ROOT / "conda.yaml").read_text())
    deps = conda["dependencies"]
    assert "python=3.11" in deps
    assert any(str(d).startswith("openjdk=") and str(d).split("=")[1] in ("17", "21") for d in deps)
    pip_list = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip_list == pins


def test_every_pin_is_exact_and_pandas_is_2x():
    pins = environment.read_pins()
    assert all("==" in line for line in pins.values())
    assert pins["pandas"].split("==")[1].startswith("2.")
    assert pins["pyspark"].split("==")[1].startswith("4.")


def test_model_requirements_are_the_pins_of_runtime_packages():
    requirements = environment.model_pip_requirements()
    pins = environment.read_pins()
    assert requirements == [pins[name] for name in environment.MODEL_RUNTIME_PACKAGES]
    assert any(r.startswith("pyspark==") for r in requirements)


def test_installed_versions_match_pins():
    for name, line in environment.read_pins().items():
        assert environment.package_version(name) == line.split("==")[1], name


def _fake_java_home(tmp_path, version_line):
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return home


@pytest.mark.parametrize("version_line, expected", [
    ('openjdk version "11.0.21" 2023-10-17', "Java 11.0.21"),
    ('java version "1.8.0_392"', "Java 1.8.0_392"),
])
def test_old_java_is_refused_with_one_line(tmp_path, monkeypatch, version_line, expected):
    monkeypatch.setenv("JAVA_HOME", str(_fake_java_home(tmp_path, version_line)))
    environment.check_java.cache_clear()
    try:
        with pytest.raises(UserInputError) as info:
            environment.check_java()
    finally:
        environment.check_java.cache_clear()
    message = str(info.value)
    assert expected in message and "17" in message and "\n" not in message


def test_missing_java_home_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-such-jdk"))
    environment.check_java.cache_clear()
    try:
        with pytest.raises(UserInputError, match="no working Java"):
            environment.check_java()
    finally:
        environment.check_java.cache_clear()


def test_java_17_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(_fake_java_home(tmp_path, 'openjdk version "17.0.15" 2025-04-15')))
    environment.check_java.cache_clear()
    try:
        assert environment.check_java() == "17.0.15"
    finally:
        environment.check_java.cache_clear()


def test_git_state_reports_commit_and_dirtiness(tmp_path):
    import subprocess

    assert environment.git_state(tmp_path) == {"git_commit": "unknown", "git_dirty": "unknown"}
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("a")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["add", "a.txt"], check=True)
    subprocess.run(git + ["commit", "-qm", "a"], check=True)
    state = environment.git_state(tmp_path)
    assert len(state["git_commit"]) == 40 and state["git_dirty"] == "false"
    (tmp_path / "a.txt").write_text("b")
    assert environment.git_state(tmp_path)["git_dirty"] == "true"


def _mlproject():
    return yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())


SCRIPTS = {"main": "train.py", "train": "train.py", "generate_data": "generate_data.py",
           "score_batch": "score_batch.py", "score_stream": "score_stream.py", "tune_hyperopt": "tune_hyperopt.py",
           "tune_grid": "tune_grid.py", "promote": "promote.py", "export_onnx": "export_onnx.py",
           "train_sklearn": "train_sklearn.py", "score_pandas_udf": "score_pandas_udf.py",
           "train_per_group": "train_per_group.py", "score_per_group": "score_per_group.py",
           "check_drift": "check_drift.py", "reproduce": "reproduce.py"}


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
    for entry, script in SCRIPTS.items():
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
        "data_path": "", "label_col": "price", "model_type": "rf", "num_trees": 100, "max_depth": 5, "max_bins": 40,
        "min_instances_per_node": 1, "feature_subset_strategy": "auto", "log_label": "false",
        "seed": 42, "train_fraction": 0.8, "register_as": "", "spark_master": "",
    }
    assert _mlproject()["entry_points"]["main"] == _mlproject()["entry_points"]["train"]


def test_python_workers_use_the_drivers_interpreter(tmp_path):
    """Without PYSPARK_PYTHON, Spark would start `python3` from PATH for its workers."""
    import subprocess
    import sys

    code = ("import sys; from pyspark.sql import functions as F, types as T; "
            "from sparkmlops.core.spark import get_spark; "
            "s = get_spark('t', conf={'spark.ui.enabled': 'false'}); "
            "f = F.udf(lambda _: sys.prefix, T.StringType()); "
            "print('WORKER', s.range(1).select(f('id')).first()[0])")
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"  # a python3 of another environment, or none, first on PATH
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"WORKER {sys.prefix}" in result.stdout


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
