"""Helpers shared by the benchmark scripts: paths, an isolated tracking store, timed commands, figures read
from output, percentiles, the cores a step used and the JVM's memory."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REAL_DIR = ROOT.parent / "shared" / "data" / "sf-airbnb"


def isolated_env(tmp: Path) -> dict:
    """This Python's environment first on PATH, a fresh SQLite store, its artifacts and the data cache
    under ``tmp`` (an experiment with its own artifact location: MLflow's default is ./mlruns of the cwd)."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
        "MLFLOW_EXPERIMENT_NAME": "bench",
        "SPARKMLOPS_DATA_CACHE": str(tmp / "cache"),
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
    }
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(name, None)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import mlflow; mlflow.get_experiment_by_name('bench') or "
            f"mlflow.create_experiment('bench', artifact_location={(tmp / 'artifacts').as_uri()!r})",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
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
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from sparkmlops.core.spark import get_spark; "
                "from sparkmlops.data.generators import ensure_default_data as e; print(e(get_spark('gen')))",
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        data = next((tmp / "cache").glob("*.parquet")).as_posix()
    subprocess.run(
        [sys.executable, "-c", "import mlflow, pyspark; mlflow.search_runs()"], env=env, check=True, capture_output=True
    )
    return env, data


def parsed(pattern: str, text: str, what: str) -> str:
    """``pattern``'s first group in a command's output; the benchmark stops naming ``what`` when it is
    missing (a figure it cannot read is an error, never a nan in the table)."""
    match = re.search(pattern, text)
    if not match:
        sys.exit(f"benchmark: no {what} in the output (looked for {pattern!r}):\n{text[-3000:]}")
    return match.group(1)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def tail_latency(values: list[float], q: float = 0.99) -> str:
    """The p99 (or other tail quantile) as text, only from enough samples to hold it: at least 1,000, so the
    tail has 10 of them; fewer say how many there were."""
    if len(values) < MIN_TAIL_SAMPLES:
        return f"n/a ({len(values):,} samples)"
    return f"{percentile(values, q):.1f}"


MIN_TAIL_SAMPLES = 1000


def _tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by process ``root`` and every live descendant (Spark's JVM, its Python
    workers), each with the CPU of its children that already exited and were reaped (cutime, cstime)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(proc.name)
        children.setdefault(int(fields[1]), []).append(pid)  # fields[1]: the parent's pid
        times[pid] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime, in clock ticks
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """The cores a measured step kept busy: the CPU time of this process and its descendants (the JVM,
    Python workers) over the step's wall time, so "per core" figures divide by the cores used, not by a
    nominal count, and other processes on the machine do not count."""

    def __enter__(self):
        self.started, self._cpu = time.perf_counter(), _tree_cpu_seconds(os.getpid())
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        self.cores = (_tree_cpu_seconds(os.getpid()) - self._cpu) / self.seconds
        return False


def java_rss_mb(parent: int | None = None) -> tuple[float, float]:
    """(current, peak) resident memory in MB of the JVMs started by process ``parent`` (this one by default):
    Spark's driver JVM, whose heap is where a Spark job's memory goes. (0, 0) when there is none."""
    parent = parent or os.getpid()
    current = peak = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if status.get("Name", "").strip() == "java" and int(status.get("PPid", "0")) == parent:
            current += int(status.get("VmRSS", "0 kB").split()[0]) / 1024
            peak += int(status.get("VmHWM", "0 kB").split()[0]) / 1024
    return current, peak
