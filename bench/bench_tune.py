"""Benchmark: tune_hyperopt's quality and speed, and SparkTrials' per-trial overhead, in one run.

quality  `mlflow run -e tune_hyperopt -P max_evals=32` on the real data: test rmse/r2 of the refit best
         model on the book's split (randomSplit([.8, .2], seed=42)) against the book's RF (rmse 211.5,
         r2 0.228). Target r2 >= 0.35.
speed    `mlflow run -e tune_hyperopt -P max_evals=16` against the same 16 trials run the way MLflow's
         examples/hyperparam does it: one `mlflow run -e train --env-manager local` per trial (with
         train_fraction=0.64, so each fit sees as many rows as a trial's fit split). Target: >= 3x faster.
overhead A trivial objective, 16 trials with Hyperopt's serial Trials vs SparkTrials(parallelism=1 and 2):
         the seconds SparkTrials adds per trial.

    python bench/bench_tune.py [--data PATH] [--parts quality,speed,overhead]

Without --data it uses ../shared/data/sf-airbnb/sf-airbnb-clean.parquet if present, else the generated
default dataset.
"""

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REAL_DIR, ROOT, bench_setup, timed

REAL = REAL_DIR / "sf-airbnb-clean.parquet"
BOOK = {"rmse": 211.5, "r2": 0.228}
TRIAL_PARAMS = ("num_trees", "max_depth", "max_bins", "min_instances_per_node", "feature_subset_strategy",
                "log_label")


def mlflow_run(entry: str, params: dict, env) -> tuple[float, str]:
    cmd = [Path(sys.executable).parent / "mlflow", "run", ".", "-e", entry, "--env-manager", "local"]
    for name, value in params.items():
        cmd += ["-P", f"{name}={value}"]
    seconds, result = timed(cmd, env)
    return seconds, result.stdout + result.stderr


def test_metrics(output: str) -> dict:
    match = re.search(r"test rmse=([0-9.]+) r2=([-0-9.]+).* run_id=(\w+)", output)
    return {"rmse": float(match.group(1)), "r2": float(match.group(2)), "run_id": match.group(3)}


def quality(data: str, env) -> None:
    seconds, output = mlflow_run("tune_hyperopt", {"data_path": data, "max_evals": 32}, env)
    got = test_metrics(output)
    print(f"quality: tune_hyperopt max_evals=32 on {Path(data).name}: test rmse={got['rmse']:.2f} "
          f"r2={got['r2']:.3f} ({seconds:.0f} s)")
    print(f"quality: book RF rmse={BOOK['rmse']} r2={BOOK['r2']}: rmse ratio tuned/book "
          f"{got['rmse'] / BOOK['rmse']:.3f}, r2 {got['r2']:.3f} (target >= 0.35)")


def speed(data: str, env) -> None:
    import mlflow

    tune_s, output = mlflow_run("tune_hyperopt", {"data_path": data, "max_evals": 16}, env)
    parent_id = test_metrics(output)["run_id"]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    children = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    children.sort(key=lambda r: int(r.data.tags["trial_number"]))
    per_trial = []
    for child in children:
        params = {name: child.data.params[name] for name in TRIAL_PARAMS}
        seconds, _ = mlflow_run("train", {"data_path": data, "train_fraction": 0.64, **params}, env)
        per_trial.append(seconds)
    baseline_s = sum(per_trial)
    print(f"speed: tune_hyperopt engine=mllib, 16 trials in one run (incl. setup and refit): {tune_s:6.1f} s")
    print(f"speed: the same {len(per_trial)} trials, one `mlflow run -e train` each:            {baseline_s:6.1f} s "
          f"({baseline_s / len(per_trial):.1f} s per trial)")
    print(f"speed: ratio baseline/tune_hyperopt: {baseline_s / tune_s:.2f}x faster (target >= 3x)")


def overhead(env) -> None:
    code = r"""
import time
from hyperopt import SparkTrials, Trials, fmin, hp, tpe
import numpy as np
from sparkmlops.core.spark import get_spark
spark = get_spark("bench-overhead", conf={"spark.ui.enabled": "false"})
space = hp.uniform("x", -1, 1)
def run(trials, n=16):
    started = time.perf_counter()
    fmin(lambda x: x * x, space, tpe.suggest, max_evals=n, trials=trials, rstate=np.random.default_rng(0),
         show_progressbar=False)
    return time.perf_counter() - started
run(SparkTrials(parallelism=1, spark_session=spark), 2)  # start the Python workers outside the timings
serial = run(Trials())
p1 = run(SparkTrials(parallelism=1, spark_session=spark))
p2 = run(SparkTrials(parallelism=2, spark_session=spark))
print(f"overhead: 16 trivial trials: Trials {serial:.2f} s, SparkTrials(1) {p1:.2f} s, SparkTrials(2) {p2:.2f} s")
print(f"overhead: SparkTrials adds {(p1 - serial) / 16:.2f} s per trial (parallelism=1), "
      f"{(p2 - serial) / 16:.2f} s per trial (parallelism=2)")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    print("\n".join(line for line in result.stdout.splitlines() if line.startswith("overhead:")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="")
    parser.add_argument("--parts", default="quality,speed,overhead")
    args = parser.parse_args()
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        env, data = bench_setup(Path(tmp), args.data, REAL)
        print(f"data: {data}")
        started = time.perf_counter()
        if "quality" in parts:
            quality(data, env)
        if "speed" in parts:
            speed(data, env)
        if "overhead" in parts:
            overhead(env)
        print(f"total benchmark time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
