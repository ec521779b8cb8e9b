"""MLflow imported at its first use (core.imports): the same MLflow as an ordinary import, whichever way
and from however many threads it is first touched. Each case needs a fresh interpreter, where MLflow is not
yet imported, so each runs in a process of its own."""

import subprocess
import sys

from conftest import PROJECT_ROOT


def test_mlflow_is_imported_once():
    """A first touch by `from mlflow.x import y`, as an `except` clause makes (tracking.is_missing): with the
    standard library's LazyLoader it ran mlflow.exceptions twice, and MLflow's own `except MlflowException`
    missed the errors it raised."""
    code = """
import sys
from sparkmlops.core import tracking
from mlflow.exceptions import MlflowException
import mlflow.tracking.client as client_module
assert client_module.MlflowException is MlflowException, "two MlflowException classes"
assert tracking.mlflow.MlflowClient is sys.modules["mlflow"].MlflowClient
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_script_imports_mlflow_before_its_job_runs():
    """What lets the JVM start while MLflow loads (core.jobs): loading a script, with its declaration and
    every module the declaration names, leaves MLflow unimported. Not export_onnx's: the model it logs
    (serve/onnx_pyfunc.py, self-contained) is a class of MLflow's PythonModel; nor pipeline's, which runs
    export_onnx as a step."""
    code = """
import importlib.util, pathlib, sys
for script in sorted(set(pathlib.Path().glob("*.py")) - {pathlib.Path("export_onnx.py"), pathlib.Path("pipeline.py")}):
    spec = importlib.util.spec_from_file_location(script.stem, script)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "mlflow")
assert not loaded, loaded[:10]
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_stand_in_pickles_as_the_module():
    """A closure Spark ships may capture it: it pickles (and copies) to the same module, by name."""
    import copy
    import pickle

    import cloudpickle

    from sparkmlops.core import tracking

    for copied in (pickle.loads(pickle.dumps(tracking.mlflow)), cloudpickle.loads(cloudpickle.dumps(tracking.mlflow))):
        assert copied.get_tracking_uri is tracking.mlflow.get_tracking_uri
    assert copy.copy(tracking.mlflow).MlflowClient is tracking.mlflow.MlflowClient


def test_threads_touching_mlflow_first_at_once_all_see_it_whole():
    """The SparkSession starts in a thread while the main thread logs the run: both may touch MLflow first
    (with LazyLoader on Python 3.11, the second read a half-run module: AttributeError)."""
    code = """
import threading
from sparkmlops.core import tracking
errors = []
def touch():
    try:
        tracking.mlflow.get_tracking_uri()
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=touch) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
assert not errors, errors
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
