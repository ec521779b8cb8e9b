"""Pins, Java detection and the MLproject contract."""

import os
import stat
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT_ROOT

from sparkmlops.core import environment
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


def _pin_file_lines() -> dict[str, str]:
    """name -> "name==version" as requirements.txt says it, read here independently of the code."""
    lines = [line.strip() for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines()]
    return {line.split("==")[0].lower(): line for line in lines if line and not line.startswith("#")}


def test_a_logged_spark_model_requires_exactly_the_pinned_runtime(trained_model):
    """What a consumer of the model installs: the pins of the five packages a Spark model needs to load
    and predict (README: the pins are the single source), nothing inferred."""
    import mlflow

    folder = mlflow.artifacts.download_artifacts(trained_model[0])
    logged = (Path(folder) / "requirements.txt").read_text().split()
    pins = _pin_file_lines()
    assert logged == [pins[name] for name in ("mlflow", "pyspark", "pandas", "numpy", "pyarrow")]


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


@pytest.mark.parametrize(
    "version_line, expected",
    [
        ('openjdk version "11.0.21" 2023-10-17', "Java 11.0.21"),
        ('java version "1.8.0_392"', "Java 1.8.0_392"),
    ],
)
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


@pytest.mark.process
def test_python_workers_use_the_drivers_interpreter(tmp_path):
    """Without PYSPARK_PYTHON, Spark would start `python3` from PATH for its workers."""
    import subprocess
    import sys

    code = (
        "import sys; from pyspark.sql import functions as F, types as T; "
        "from sparkmlops.core.spark import get_spark; "
        "s = get_spark('t', conf={'spark.ui.enabled': 'false'}); "
        "f = F.udf(lambda _: sys.prefix, T.StringType()); "
        "print('WORKER', s.range(1).select(f('id')).first()[0])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"  # a python3 of another environment, or none, first on PATH
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"WORKER {sys.prefix}" in result.stdout
