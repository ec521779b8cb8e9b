"""Benchmark: tune_hyperopt's quality and speed, and SparkTrials' per-trial overhead, in one run.

search   one `mlflow run -e tune_hyperopt` with the default max_evals (16), engine=mllib, on the real data.
quality  its refit best model against the book's RF (numTrees=100, maxDepth=5, maxBins=40, seed=42), which is
         fitted here in the same run with chapter 11's own code on the same split (randomSplit([.8, .2],
         seed=42); checked to hold the same rows as the project's split), and both scored on the same rows:
         the test rows the book's pipeline keeps (its StringIndexer(handleInvalid="skip") drops rows with
         categories its training split never saw). The tuned model on every test row is shown too.
         Target r2 >= 0.40.
speed    the search against the same 16 trials run the way MLflow's examples/hyperparam does it: one
         `mlflow run -e train --env-manager local` per trial (train_fraction=0.64, so each fit sees as many
         rows as a trial's fit split). Target: >= 3x faster.
overhead A trivial objective, 16 trials with Hyperopt's serial Trials vs SparkTrials(parallelism=1 and 2):
         the seconds SparkTrials adds per trial.
tuners   tune_hyperopt against tune_optuna: the same engine(s), space, max_evals and seed, one `mlflow run`
         each, alternating, on the same split: the refit best model's test metrics (the same test rows for
         both), the best validation rmse, the trials' time, trials pruned, and the whole run's time.

    python bench/bench_tune.py [--data PATH] [--parts search,speed,overhead,tuners]
                               [--tuners_engines mllib,sklearn] [--tuners_evals 16]

Without --data it uses ../shared/data/sf-airbnb/sf-airbnb-clean.parquet if present, else the generated
default dataset.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REAL_DIR, ROOT, bench_setup, parsed, timed

REAL = REAL_DIR / "sf-airbnb-clean.parquet"
TRIAL_PARAMS = (
    "model_type",
    "num_trees",
    "max_depth",
    "max_bins",
    "min_instances_per_node",
    "feature_subset_strategy",
    "log_label",
)  # a family's trials have its own subset of them

# The book's RF fitted with chapter 11's code, and the tuned model, scored on the same rows.
SAME_ROWS = r"""
import json, sys
import mlflow
from pyspark.ml import Pipeline
from pyspark.ml.feature import StringIndexer, VectorAssembler
from pyspark.ml.regression import RandomForestRegressor
from pyspark.sql import functions as F
from sparkmlops.core.spark import get_spark
from sparkmlops.fitting.metrics import regression_metrics

data, tuned_uri = sys.argv[1], sys.argv[2]
spark = get_spark("bench-tune-same-rows")
airbnbDF = spark.read.parquet(data)
(trainDF, testDF) = airbnbDF.randomSplit([.8, .2], seed=42)
# The project splits after casting the label to double: the same rows, or the comparison is not fair.
_, project_test = airbnbDF.withColumn("price", F.col("price").cast("double")).randomSplit([.8, .2], seed=42)
if testDF.exceptAll(project_test).count() or project_test.exceptAll(testDF).count():
    sys.exit("the book's and the project's test splits differ: no comparison on the same rows")
categoricalCols = [field for (field, dataType) in trainDF.dtypes if dataType == "string"]
indexOutputCols = [x + "Index" for x in categoricalCols]
stringIndexer = StringIndexer(inputCols=categoricalCols, outputCols=indexOutputCols, handleInvalid="skip")
numericCols = [field for (field, dataType) in trainDF.dtypes if ((dataType == "double") & (field != "price"))]
vecAssembler = VectorAssembler(inputCols=indexOutputCols + numericCols, outputCol="features")
rf = RandomForestRegressor(labelCol="price", maxBins=40, maxDepth=5, numTrees=100, seed=42)
book = Pipeline(stages=[stringIndexer, vecAssembler, rf]).fit(trainDF).transform(testDF).cache()
kept = book.select(*testDF.columns)
tuned = mlflow.spark.load_model(tuned_uri)
print(json.dumps({"test_rows": testDF.count(), "kept_rows": kept.count(),
                  "book_kept": regression_metrics(book, "price"),
                  "tuned_kept": regression_metrics(tuned.transform(kept), "price"),
                  "tuned_all": regression_metrics(tuned.transform(testDF), "price")}))
"""


def mlflow_run(entry: str, params: dict, env) -> tuple[float, str]:
    cmd = [Path(sys.executable).parent / "mlflow", "run", ".", "-e", entry, "--env-manager", "local"]
    for name, value in params.items():
        cmd += ["-P", f"{name}={value}"]
    seconds, result = timed(cmd, env)
    return seconds, result.stdout + result.stderr


def search(data: str, env) -> dict:
    seconds, output = mlflow_run("tune_hyperopt", {"data_path": data}, env)
    return {
        "seconds": seconds,
        "run_id": parsed(r" run_id=(\w+) best_run_id=", output, "run_id"),
        "trials_seconds": float(parsed(r"trials ok in ([0-9.]+) s", output, "the trials' time")),
        "trials": parsed(r"tune_hyperopt: (\d+/\d+) trials ok", output, "the trial count"),
        "best": parsed(r"tune_hyperopt: best (\{.*?\}) test", output, "the best parameters"),
    }


def quality(data: str, tuned: dict, env) -> None:
    _, result = timed([sys.executable, "-c", SAME_ROWS, data, f"runs:/{tuned['run_id']}/model"], env)
    got = json.loads(result.stdout.strip().splitlines()[-1])
    book, kept, every = got["book_kept"], got["tuned_kept"], got["tuned_all"]
    print(
        f"\nquality: tune_hyperopt (default max_evals, {tuned['trials']} trials ok), best {tuned['best']}; "
        f"the book's RF fitted in this run; book split (randomSplit([.8, .2], seed=42)), {got['test_rows']} "
        f"test rows, of which the book's pipeline keeps {got['kept_rows']}"
    )
    print("| model | rows scored | rmse | r2 | mae |")
    print("|---|---|---|---|---|")
    print(
        f"| book RF (100 trees, depth 5) | {got['kept_rows']} kept | {book['rmse']:.1f} | {book['r2']:.3f} | "
        f"{book['mae']:.1f} |"
    )
    print(
        f"| tuned (tune_hyperopt) | the same {got['kept_rows']} | {kept['rmse']:.1f} | {kept['r2']:.3f} | "
        f"{kept['mae']:.1f} |"
    )
    print(
        f"| tuned (tune_hyperopt) | all {got['test_rows']} | {every['rmse']:.1f} | {every['r2']:.3f} | "
        f"{every['mae']:.1f} |"
    )
    print(
        f"quality on the same rows: rmse {kept['rmse'] / book['rmse'] - 1:+.1%}, r2 {kept['r2'] - book['r2']:+.3f} "
        f"(target tuned r2 >= 0.40: {'met' if kept['r2'] >= 0.40 else 'not met'})"
    )


def speed(data: str, tuned: dict, env) -> None:
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    children = mlflow.search_runs(
        search_all_experiments=True,
        output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{tuned['run_id']}'",
    )
    children.sort(key=lambda r: int(r.data.tags["trial_number"]))
    per_trial = []
    for child in children:
        params = {name: child.data.params[name] for name in TRIAL_PARAMS if name in child.data.params}
        seconds, _ = mlflow_run("train", {"data_path": data, "train_fraction": 0.64, **params}, env)
        per_trial.append(seconds)
    baseline_s = sum(per_trial)
    print(f"\nspeed: the {len(per_trial)} trials of that search")
    print("| how | seconds |")
    print("|---|---|")
    print(
        f"| one `mlflow run -e tune_hyperopt` (setup, trials, refit and logging of the best) | {tuned['seconds']:.1f} |"
    )
    print(f"| of which the trials themselves | {tuned['trials_seconds']:.1f} |")
    print(
        f"| the same trials, one `mlflow run -e train` each | {baseline_s:.1f} ({baseline_s / len(per_trial):.1f} "
        "per trial) |"
    )
    print(
        f"speed: {baseline_s / tuned['seconds']:.2f}x faster end to end, {baseline_s / tuned['trials_seconds']:.2f}x "
        "counting the trials alone (target >= 3x end to end)"
    )


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
    print("\n" + "\n".join(line for line in result.stdout.splitlines() if line.startswith("overhead:")))


def tuner_run(tuner: str, data: str, engine: str, evals: int, env) -> dict:
    params = {"data_path": data, "engine": engine, "max_evals": evals}
    if engine == "sklearn":
        params["parallelism"] = 2  # one trial per core: MLflow reseeds each task's sampler, TPE stays TPE
    seconds, output = mlflow_run(tuner, params, env)
    metrics = {
        name: float(parsed(rf"{tuner}: best .* test .*{name}=([0-9.-]+)", output, f"the test {name}"))
        for name in ("rmse", "r2", "mae")
    }
    pruned = parsed(r"trials ok \((\d+) pruned\)", output, "pruned trials") if "pruned)" in output else "0"
    return {
        "seconds": seconds,
        **metrics,
        "pruned": int(pruned),
        "trials_seconds": float(parsed(r"trials ok(?: \(\d+ pruned\))? in ([0-9.]+) s", output, "the trials' time")),
        "ok": parsed(rf"{tuner}: (\d+/\d+) trials ok", output, "the trial count"),
        "best_val": float(parsed(r"best trial \d+ \(val_rmse=([0-9.]+)\)", output, "the best validation rmse")),
    }


def tuners(data: str, engines: list[str], evals: int, env) -> None:
    print(
        f"\ntuners: tune_hyperopt vs tune_optuna, {evals} trials each, seed 42, the default space of each "
        "engine, the same split and test rows; one `mlflow run` each, hyperopt first"
    )
    print("| engine | tuner | test rmse | test r2 | best val rmse | trials ok (pruned) | trials s | run s |")
    print("|---|---|---|---|---|---|---|---|")
    for engine in engines:
        got = {tuner: tuner_run(tuner, data, engine, evals, env) for tuner in ("tune_hyperopt", "tune_optuna")}
        for tuner, r in got.items():
            print(
                f"| {engine} | {tuner} | {r['rmse']:.1f} | {r['r2']:.3f} | {r['best_val']:.1f} | "
                f"{r['ok']} ({r['pruned']}) | {r['trials_seconds']:.1f} | {r['seconds']:.1f} |"
            )
        hyperopt, optuna = got["tune_hyperopt"], got["tune_optuna"]
        print(
            f"tuners ({engine}): optuna/hyperopt test r2 {optuna['r2'] - hyperopt['r2']:+.3f}, trials time "
            f"{optuna['trials_seconds'] / hyperopt['trials_seconds']:.2f}x, run time "
            f"{optuna['seconds'] / hyperopt['seconds']:.2f}x"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="")
    parser.add_argument(
        "--parts",
        default="search,speed,overhead,tuners",
        help="search (and the quality comparison), speed (needs search), overhead, tuners",
    )
    parser.add_argument("--tuners_engines", default="mllib,sklearn")
    parser.add_argument("--tuners_evals", type=int, default=16)
    args = parser.parse_args()
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        env, data = bench_setup(Path(tmp), args.data, REAL)
        print(f"data: {data}")
        started = time.perf_counter()
        if "search" in parts or "speed" in parts:
            tuned = search(data, env)
            quality(data, tuned, env)
            if "speed" in parts:
                speed(data, tuned, env)
        if "overhead" in parts:
            overhead(env)
        if "tuners" in parts:
            tuners(data, args.tuners_engines.split(","), args.tuners_evals, env)
        print(f"total benchmark time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
