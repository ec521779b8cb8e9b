"""Benchmark of the pipeline entry point against its baseline, the same steps as separate commands, in one run.

Baseline: what a user chains by hand, one `mlflow run . -e X --env-manager local` per step: train (with
register_as), promote, score_batch; each a process of its own with its own JVM. Measured, in a fresh
store of its own each time:
- fresh: `python pipeline.py` doing the same steps (check, train, evaluate, register, promote, score) in one
  process and one SparkSession; target <= 0.5x the baseline;
- rerun: the same command again with nothing changed: every step reused, no JVM (checked from the run's
  tags); target <= 10 s end to end;
- changed: a train parameter changed: the data check reused, the rest rerun.
Medians of --repeats; the data is the real SF Airbnb table when present (else the generated default).

    python bench/bench_pipeline.py [--data PATH] [--repeats 3]
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from common import REAL_DIR, bench_setup, isolated_env, timed

TREES = ["--num_trees", "20", "--max_depth", "5"]


def mlflow_run(entry: str, **params: str) -> list[str]:
    command = ["mlflow", "run", ".", "-e", entry, "--env-manager", "local", "--experiment-name", "bench"]
    for name, value in params.items():
        command += ["-P", f"{name}={value}"]
    return command


def separate_commands(env: dict, data: str, scores: str) -> float:
    seconds = 0.0
    for command in (
        mlflow_run("train", data_path=data, register_as="bench_price", num_trees="20", max_depth="5"),
        mlflow_run("promote", model_name="bench_price", data_path=data),
        mlflow_run("score_batch", model_uri="models:/bench_price@champion", input_path=data, output_path=scores),
    ):
        taken, _ = timed(command, env)
        seconds += taken
    return seconds


def pipeline(env: dict, data: str, scores: str, *extra: str) -> tuple[float, str]:
    command = [sys.executable, "pipeline.py", "--data_path", data, "--register_as", "bench_price", *TREES]
    command += ["--score_input_path", data, "--score_output_path", scores, *extra]
    seconds, result = timed(command, env)
    return seconds, result.stdout + result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = {"separate": [], "fresh": [], "rerun": [], "changed": []}
    jvm_in_rerun = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as work:
            env, data = bench_setup(Path(work), args.data, REAL_DIR / "sf-airbnb-clean.parquet")
            rows["separate"].append(separate_commands(env, data, f"{work}/separate-scores"))
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as work:
            env = isolated_env(Path(work))
            seconds, _ = pipeline(env, data, f"{work}/scores")
            rows["fresh"].append(seconds)
            seconds, output = pipeline(env, data, f"{work}/scores")
            rows["rerun"].append(seconds)
            jvm_in_rerun.append("Using Spark's default log4j profile" in output)
            seconds, _ = pipeline(env, data, f"{work}/scores", "--num_trees", "21")
            rows["changed"].append(seconds)
    median = {name: statistics.median(values) for name, values in rows.items()}
    print(f"Pipeline: {data}, {' '.join(TREES)}, median of {args.repeats}")
    print("| what | s | vs separate commands |")
    print("|---|---|---|")
    labels = {
        "separate": "separate `mlflow run` commands: train (register), promote, score_batch",
        "fresh": "`python pipeline.py`, fresh store: check, train, evaluate, register, promote, score",
        "rerun": "the same command again, nothing changed (every step reused)",
        "changed": "num_trees changed (the data check reused, the rest rerun)",
    }
    for name, label in labels.items():
        print(f"| {label} | {median[name]:.1f} | {median[name] / median['separate']:.2f}x |")
    print(
        f"JVM started by a rerun with nothing changed: {'yes' if any(jvm_in_rerun) else 'no'} ({args.repeats} reruns)"
    )


if __name__ == "__main__":
    main()
