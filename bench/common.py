"""Helpers shared by the benchmark scripts: paths, an isolated tracking store, timed commands."""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REAL_DIR = ROOT.parent / "shared" / "data" / "sf-airbnb"


def isolated_env(tmp: Path) -> dict:
    """This Python's environment first on PATH, a fresh SQLite store, its artifacts and the data cache
    under ``tmp`` (an experiment with its own artifact location: MLflow's default is ./mlruns of the cwd)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "MLFLOW_EXPERIMENT_NAME": "bench",
           "SPARKMLOPS_DATA_CACHE": str(tmp / "cache"),
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(name, None)
    subprocess.run([sys.executable, "-c", "import mlflow; mlflow.get_experiment_by_name('bench') or "
                    f"mlflow.create_experiment('bench', artifact_location={(tmp / 'artifacts').as_uri()!r})"],
                   env=env, check=True, capture_output=True)
    return env


def timed(cmd, env, check=True):
    """(seconds, CompletedProcess) of ``cmd`` run from the project root; exit on failure when ``check``."""
    started = time.perf_counter()
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if check and result.returncode != 0:
        sys.exit(f"benchmark command failed: {' '.join(map(str, cmd))}\n{result.stderr[-3000:]}")
    return seconds, result


def bench_setup(tmp: Path, data: str, real: Path) -> tuple[dict, str]:
    """(environment, data path) for a benchmark: ``data``, else the real data if present, else the
    generated default dataset (created here, outside the timings). Also warms up the store and libraries."""
    env = isolated_env(tmp)
    data = data or (str(real) if real.exists() else "")
    if not data:
        subprocess.run([sys.executable, "-c", "from sparkmlops.core.spark import get_spark; "
                        "from sparkmlops.data.generators import ensure_default_data as e; print(e(get_spark('gen')))"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        data = next((tmp / "cache").glob("*.parquet")).as_posix()
    subprocess.run([sys.executable, "-c", "import mlflow, pyspark; mlflow.search_runs()"], env=env, check=True,
                   capture_output=True)
    return env, data
