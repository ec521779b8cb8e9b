"""MLflow imported at its first use (core.imports): the same MLflow as an ordinary import, whichever way
and from however many threads it is first touched. Each case needs a fresh interpreter, where MLflow is not
yet imported, so each runs in a process of its own."""

import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

FIRST_TOUCH = {
    # the first touch an `except` clause makes (tracking.is_missing): with the standard library's LazyLoader
    # this ran mlflow.exceptions twice, and MLflow's own `except MlflowException` missed the errors it raised
    "from-import": "from mlflow.exceptions import MlflowException",
    "attribute": "MlflowException = tracking.mlflow.exceptions.MlflowException",
}


@pytest.mark.parametrize("first_touch", FIRST_TOUCH)
def test_mlflow_is_imported_once(first_touch):
    code = f"""
from sparkmlops.core import tracking
{FIRST_TOUCH[first_touch]}
import mlflow.tracking.client as client_module
assert client_module.MlflowException is MlflowException, "two MlflowException classes"
assert tracking.mlflow.MlflowClient is sys.modules["mlflow"].MlflowClient
"""
    result = subprocess.run(
        [sys.executable, "-c", "import sys\n" + code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


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
