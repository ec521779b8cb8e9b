"""Benchmarks of single-node models on Spark (issue 7), each against a baseline measured in the same run.

Inference: on N generated rows (default 1 million), a scikit-learn model from train_sklearn scored by
plain pandas ``predict`` in one process (the per-core baseline), by score_pandas_udf's mapInPandas path
and by mlflow.pyfunc.spark_udf, both on local[C] writing to Spark's noop sink (the model's work, not parquet
encoding), in alternating rounds. "Per core" divides by the cores each step actually kept busy (the CPU
time of this process, its JVM and Python workers over the step's wall time), not by a nominal count.
Target: mapInPandas per core within 1.5x of pandas per core. Also score_pandas_udf end to end (parquet
output) for reference.

Per-group training: train_per_group's groupBy().applyInPandas job on generated IoT data with 36 devices
vs the same per-group function (fit, evaluate, nested run, logged model) called group after group in
this one process.

    python bench/bench_pandas_udf.py [--rows 1000000] [--cores 2] [--iot-rows 360000]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import CpuMeter, isolated_env  # noqa: E402

from sparkmlops.core import tracking
from sparkmlops.core.spark import get_spark
from sparkmlops.data import generators
from sparkmlops.data import schema as data_schema
from sparkmlops.data.splits import load_labelled, split_train_test
from sparkmlops.inference.group_models import group_spec
from sparkmlops.score import score_pandas_udf
from sparkmlops.score.score_pandas_udf import PandasUdfParams
from sparkmlops.train.train_per_group import (
    SPLIT_COL,
    GroupContext,
    PerGroupParams,
    train_group,
    train_per_group_and_log,
)
from sparkmlops.train.train_sklearn import SklearnTrainParams, train_sklearn_and_log


def best_of(repeats, fn):
    """(median seconds, last result) of ``repeats`` calls."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def inference(spark, tmp: Path, rows: int, cores: int, num_trees: int, max_depth: int, repeats: int):
    import mlflow
    import pyarrow.parquet as pq

    default = generators.ensure_default_data(spark)
    with tracking.tracked_run("bench-train-sklearn"):
        trained = train_sklearn_and_log(
            spark, SklearnTrainParams(data_path=default, num_trees=num_trees, max_depth=max_depth)
        )
    path = str(tmp / "rows.parquet")
    generators.generate_airbnb(spark, rows, seed=7, n_partitions=cores * 2).write.parquet(path)
    model_info = score_pandas_udf.resolve_pyfunc_model(trained.model_uri)
    columns = [c for c, _ in model_info.input_columns()]

    # Plain pandas in this process, one thread: read once, then the estimator's own predict (the
    # strictest baseline; through pyfunc, with its schema enforcement, is also shown).
    read_s, frame = best_of(1, lambda: pq.read_table(path).to_pandas())
    pyfunc_model = mlflow.pyfunc.load_model(trained.model_uri)
    estimator = pyfunc_model.get_raw_model()
    pyfunc_s, _ = best_of(1, lambda: pyfunc_model.predict(frame[columns]))

    df = spark.read.parquet(path)
    spark.conf.set(score_pandas_udf.ARROW_BATCH_CONF, "10000")

    def noop(scored):
        scored.write.format("noop").mode("overwrite").save()

    # Warm up every Python worker (start, imports) outside the timings; each timed call still ships and
    # loads the model, as a job does.
    noop(score_pandas_udf.score_map_in_pandas(spark, df, model_info))
    noop(score_pandas_udf.score_spark_udf(spark, df, model_info))
    methods = {
        "pandas": lambda: estimator.predict(frame[columns]),
        "map_in_pandas": lambda: noop(score_pandas_udf.score_map_in_pandas(spark, df, model_info)),
        "spark_udf": lambda: noop(score_pandas_udf.score_spark_udf(spark, df, model_info)),
        # The floor of any mapInPandas over these rows: the Arrow round trip JVM -> Python -> JVM, no model.
        "identity": lambda: noop(df.mapInPandas(lambda frames: frames, df.schema)),
    }
    # Alternating rounds (each method once per round), medians: a slow moment of the machine hits all alike.
    measured = {name: [] for name in methods}
    for _ in range(repeats):
        for name, run in methods.items():
            with CpuMeter() as meter:
                run()
            measured[name].append((meter.seconds, meter.cores))
    rate = {name: rows / statistics.median(s for s, _ in runs) for name, runs in measured.items()}
    cores_used = {name: statistics.median(c for _, c in runs) for name, runs in measured.items()}
    per_core = {name: rate[name] / cores_used[name] for name in methods}
    params = PandasUdfParams(trained.model_uri, path, str(tmp / "scored.parquet"), mode="overwrite")
    with tracking.tracked_run("bench-score-pandas-udf"):
        end_to_end = score_pandas_udf.score_with_pandas_udf(spark, params, params.validate())

    print(
        f"\nInference, {rows:,} rows, sklearn RF {num_trees} trees depth {max_depth}, local[{cores}], median of "
        f"{repeats} alternating rounds; cores used = CPU time of this process, its JVM and Python workers / the "
        f"step's wall time (parquet read {read_s:.1f} s, not timed)"
    )
    print("| inference | rows/s | cores used | rows/s per core used | pandas per core / this per core |")
    print("|---|---|---|---|---|")
    names = {
        "pandas": "plain pandas: the estimator's `predict`, one process (baseline)",
        "map_in_pandas": "`score_pandas_udf` `method=map_in_pandas`",
        "spark_udf": "`score_pandas_udf` `method=spark_udf` (`mlflow.pyfunc.spark_udf`)",
        "identity": "`mapInPandas` returning its input unchanged (no model): the floor",
    }
    for name, label in names.items():
        print(
            f"| {label} | {rate[name]:,.0f} | {cores_used[name]:.2f} | {per_core[name]:,.0f} | "
            f"{per_core['pandas'] / per_core[name]:.2f}x |"
        )
    print(f"| `score_pandas_udf` end to end, parquet output | {end_to_end['rows_per_second']:,.0f} | | | |")
    print(f"  the estimator through pyfunc (schema enforcement per call): {rows / pyfunc_s:,.0f} rows/s")
    print(
        f"  the Arrow round trip of {len(df.columns)} columns costs {1e6 / per_core['identity']:.1f} us per row per "
        f"core used; the model {1e6 / per_core['pandas']:.1f} us per row per core"
    )
    ratio = per_core["pandas"] / per_core["map_in_pandas"]
    print(
        f"  pandas per core / mapInPandas per core = {ratio:.2f}x (target <= 1.5x: "
        f"{'met' if ratio <= 1.5 else 'NOT met'}); best possible through mapInPandas: "
        f"{(1e6 / per_core['identity'] + 1e6 / per_core['pandas']) / (1e6 / per_core['pandas']):.2f}x"
    )


def per_group(spark, tmp: Path, iot_rows: int, devices: int, num_trees: int, max_depth: int):
    path = str(tmp / "iot.parquet")
    generators.generate_iot(spark, iot_rows, n_devices=devices).write.parquet(path)
    params = PerGroupParams(
        data_path=path,
        label_col=data_schema.IOT_LABEL,
        group_col=data_schema.IOT_GROUP_COL,
        min_rows=10,
        num_trees=num_trees,
        max_depth=max_depth,
    )
    started = time.perf_counter()
    with tracking.tracked_run("bench-per-group-spark") as run:
        result = train_per_group_and_log(spark, params.validate())
    total_s = time.perf_counter() - started
    import mlflow

    groups_s = mlflow.get_run(run.info.run_id).data.metrics["groups_seconds"]

    # The same per-group work, one group after the other in this process (same rows, split and logging).
    from pyspark.sql import functions as F

    labelled = load_labelled(spark, path, params.label_col)
    train_df, test_df = split_train_test(labelled.df, params.train_fraction, params.seed)
    spec = group_spec(labelled.spec, params.group_col)
    cols = [params.group_col, *spec.feature_cols, spec.label_col]
    frame = (
        train_df.select(*cols)
        .withColumn(SPLIT_COL, F.lit("train"))
        .unionByName(test_df.select(*cols).withColumn(SPLIT_COL, F.lit("test")))
        .toPandas()
    )
    with tracking.tracked_run("bench-per-group-sequential") as run:
        context = GroupContext(
            run.info.run_id,
            run.info.experiment_id,
            tracking.portable_tracking_uri(),
            params.group_col,
            spec,
            params.forest_params(),
            params.min_rows,
            params.seed,
        )
        started = time.perf_counter()
        rows = [train_group(context, group) for _, group in frame.groupby(params.group_col)]
        sequential_s = time.perf_counter() - started
    trained = int((result.table["status"] == "trained").sum())
    assert trained == sum(int((r["status"] == "trained").sum()) for r in rows) == devices
    print(f"\nPer-group training, {iot_rows:,} IoT rows, {devices} devices, RF {num_trees} trees depth {max_depth}:")
    print(
        f"  train_per_group applyInPandas job: {groups_s:.1f} s (whole entry point incl. fallback model and "
        f"test scoring: {total_s:.1f} s)"
    )
    print(f"  the same {devices} groups one after another in one process: {sequential_s:.1f} s")
    print(f"  speed-up {sequential_s / groups_s:.2f}x on {spark.sparkContext.defaultParallelism} cores")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--num-trees", type=int, default=100)
    parser.add_argument("--max-depth", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--iot-rows", type=int, default=360_000)
    parser.add_argument("--devices", type=int, default=36)
    parser.add_argument("--skip", choices=["inference", "per-group"], default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.update(isolated_env(tmp))
        import mlflow

        mlflow.set_experiment("bench")
        spark = get_spark(
            "bench-pandas-udf",
            master=f"local[{args.cores}]",
            conf={
                "spark.ui.enabled": "false",
                "spark.sql.shuffle.partitions": str(args.cores * 2),
                "spark.driver.memory": "6g",
                "spark.ui.showConsoleProgress": "false",
            },
        )
        if args.skip != "inference":
            inference(spark, tmp, args.rows, args.cores, args.num_trees, args.max_depth, args.repeats)
        if args.skip != "per-group":
            per_group(spark, tmp, args.iot_rows, args.devices, args.num_trees, args.max_depth)
        spark.stop()


if __name__ == "__main__":
    main()
