"""Benchmark of the pipeline entry point against its baseline, the same steps as separate commands, in one run.

Baseline: what a user chains by hand, one `mlflow run . -e X --env-manager local` per step: train (with
register_as), promote, score_batch; each a process of its own with its own JVM. Measured, in a fresh
store of its own each time:
- fresh: `mlflow run . -e pipeline` doing the same steps (check, train, evaluate, register, promote, score)
  in one process and one SparkSession; target <= 0.5x the baseline;
- rerun: the same command again with nothing changed: every step reused and no JVM (both checked from the
  run's metrics and tags); target <= 10 s end to end;
- changed: a train parameter changed: the data check reused (checked), the rest rerun.
Medians of --repeats; the data is the real SF Airbnb table when present (else the generated default).

    python bench/bench_pipeline.py [--data PATH] [--repeats 3]
"""

import argparse
import re
import statistics
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


def pipeline(env: dict, data: str, scores: str, num_trees: str = "20"):
    """(seconds, the pipeline's run) of `mlflow run . -e pipeline` with the baseline's steps."""
    command = mlflow_run(
        "pipeline",
        data_path=data,
        register_as="bench_price",
        num_trees=num_trees,
        max_depth="5",
        score_input_path=data,
        score_output_path=scores,
    )
    seconds, result = timed(command, env)
    from mlflow.tracking import MlflowClient

    run_id = re.findall(r"Run \(ID '([0-9a-f]+)'\) succeeded", result.stdout + result.stderr)[-1]
    return seconds, MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = {"separate": [], "fresh": [], "rerun": [], "changed": []}
    checks = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-data-") as kept:  # the generated data, if used
        _, data = bench_setup(Path(kept), args.data, REAL_DIR / "sf-airbnb-clean.parquet")
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as work:
                env = isolated_env(Path(work))
                rows["separate"].append(separate_commands(env, data, f"{work}/separate-scores"))
            with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as work:
                env = isolated_env(Path(work))
                seconds, fresh = pipeline(env, data, f"{work}/scores")
                rows["fresh"].append(seconds)
                seconds, rerun = pipeline(env, data, f"{work}/scores")
                rows["rerun"].append(seconds)
                seconds, changed = pipeline(env, data, f"{work}/scores", num_trees="21")
                rows["changed"].append(seconds)
                checks.append(
                    fresh.data.metrics["steps_run"] == 6
                    and rerun.data.metrics["steps_reused"] == 6
                    and "spark_master" not in rerun.data.tags  # set by every run whose Spark session started
                    and changed.data.tags["step.check_data.reused"] == "true"
                    and changed.data.metrics["steps_run"] == 5
                )
    median = {name: statistics.median(values) for name, values in rows.items()}
    print(f"Pipeline: {data}, {' '.join(TREES)}, median of {args.repeats}")
    print("| what | s | vs separate commands |")
    print("|---|---|---|")
    labels = {
        "separate": "separate `mlflow run` commands: train (register), promote, score_batch",
        "fresh": "`mlflow run . -e pipeline`, fresh store: check, train, evaluate, register, promote, score",
        "rerun": "the same command again, nothing changed (every step reused)",
        "changed": "num_trees changed (the data check reused, the rest rerun)",
    }
    for name, label in labels.items():
        print(f"| {label} | {median[name]:.1f} | {median[name] / median['separate']:.2f}x |")
    print(
        f"every rerun reused 6 steps without a JVM, every changed run reused the data check: "
        f"{'yes' if all(checks) else 'NO'} ({args.repeats} repeats)"
    )


if __name__ == "__main__":
    main()
