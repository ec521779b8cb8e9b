"""Benchmark: score_batch of the ONNX export of the book's forest vs score_batch of the Spark model itself.

The book's forest (train's defaults: 100 trees of depth 5, on the real data when ../shared is present)
is exported with export_onnx; then, for each size, the same generated rows are scored by `score_batch.py`
with the Spark model (its `transform`) and with the export (an Arrow pandas UDF on the executors),
one after the other in separate processes on the same cores. Prints each one's rows/s (the run's own
`rows_per_second`: read, checks, scoring and the atomic write) and wall seconds, and the ratios export /
Spark of the wall times (end to end) and of the run metric; then the scoring alone in one warm process
(only the prediction, to Spark's noop sink), where the target applies (>= 2x). Predictions agree within the
export's parity (tested in tests/score).

    python bench/bench_score_export.py [--rows 1000000 10000000] [--files 20]
"""

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from common import REAL_DIR, isolated_env, parsed
from common import timed as run

REAL = REAL_DIR / "sf-airbnb-clean.parquet"

# The scoring alone, in one warm process on the same rows: reading them (noop sink), the Spark model's
# transform and the export's Arrow UDF, each writing only the prediction to Spark's noop sink.
SCORING_ALONE = r"""
import json, sys, time
sys.path.insert(0, "bench")
from common import CpuMeter
from sparkmlops.core.spark import get_spark
from sparkmlops.inference import resolve
from sparkmlops.inference.pandas_predict import check_pyfunc_model, score_with_arrow_udf
import mlflow
spark_uri, export_uri, rows_path = sys.argv[1:4]
spark = get_spark("bench-score-alone")
df = spark.read.parquet(rows_path)
pipeline = mlflow.spark.load_model(spark_uri)
export = resolve.resolve_model(export_uri, require_flavor="")
check_pyfunc_model(export)
def noop(frame):
    frame.select("prediction").write.format("noop").mode("overwrite").save()
noop(pipeline.transform(df.limit(1000))); noop(score_with_arrow_udf(spark, df.limit(1000), export))  # warm-up
figures = {}
for name, step in (("read", lambda: df.write.format("noop").mode("overwrite").save()),
                   ("spark", lambda: noop(pipeline.transform(df))),
                   ("export", lambda: noop(score_with_arrow_udf(spark, df, export)))):
    with CpuMeter() as meter:
        step()
    figures[name], figures[name + "_cores"] = meter.seconds, meter.cores
print(json.dumps(figures))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--files", type=int, default=20)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = isolated_env(tmp)
        _, trained = run([py, "train.py"] + (["--data_path", str(REAL)] if REAL.exists() else []), env)
        spark_uri = f"runs:/{parsed(r'run_id=([0-9a-f]{32})', trained.stdout, 'the train run id')}/model"
        _, exported = run([py, "export_onnx.py", "--model_uri", spark_uri], env)
        export_uri = f"runs:/{parsed(r'run_id=([0-9a-f]{32})', exported.stdout, 'the export run id')}/model"
        print(
            f"model: {spark_uri} (train's defaults, data: {REAL if REAL.exists() else 'generated'}); "
            f"export: {export_uri}"
        )
        print("| rows | scorer | rows/s (run metric) | wall s (process) |")
        print("|---|---|---|---|")
        for rows in args.rows:
            rows_path = tmp / f"rows-{rows}.parquet"
            run(
                [
                    py,
                    "generate_data.py",
                    "--output_path",
                    rows_path,
                    "--n_rows",
                    str(rows),
                    "--n_files",
                    str(args.files),
                ],
                env,
            )
            rates, walls = {}, {}
            for name, uri in (("Spark model, transform", spark_uri), ("ONNX export, Arrow UDF", export_uri)):
                out = tmp / f"scored-{rows}-{len(rates)}"
                walls[name], result = run(
                    [py, "score_batch.py", "--model_uri", uri, "--input_path", rows_path, "--output_path", out], env
                )
                rates[name] = float(re.search(r"\(([0-9.]+) rows/s\)", result.stdout).group(1))
                print(f"| {rows:,} | {name} | {rates[name]:,.0f} | {walls[name]:.1f} |", flush=True)
            spark_rate, export_rate = rates.values()
            spark_wall, export_wall = walls.values()
            # End to end is the process's wall time (JVM start and model resolution included); the run's own
            # rows_per_second starts at the input's read, so its ratio is shown apart, named for what it is.
            print(
                f"| {rows:,} | ratio export / Spark, end to end (wall time) | {spark_wall / export_wall:.2f}x | |",
                flush=True,
            )
            print(
                f"| {rows:,} | ratio export / Spark, run metric (read to written output) | "
                f"{export_rate / spark_rate:.2f}x | |",
                flush=True,
            )
            _, alone = run([py, "-c", SCORING_ALONE, spark_uri, export_uri, rows_path], env)
            steps = json.loads(alone.stdout.strip().splitlines()[-1])
            for name, label in (
                ("read", "reading alone (noop sink)"),
                ("spark", "Spark model's transform alone"),
                ("export", "ONNX export's Arrow UDF alone"),
            ):
                print(
                    f"| {rows:,} | {label} | {rows / steps[name]:,.0f} | {steps[name]:.1f} s on "
                    f"{steps[name + '_cores']:.2f} cores |",
                    flush=True,
                )
            print(
                f"| {rows:,} | ratio export / Spark, scoring alone | {steps['spark'] / steps['export']:.2f}x "
                "(target >= 2x) | |",
                flush=True,
            )


if __name__ == "__main__":
    main()
