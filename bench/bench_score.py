"""Benchmarks of score_batch and score_stream, each against a baseline measured in the same run.

Batch: score_batch end to end (read, signature check, transform, atomic write) on N generated rows
(default 10 million) vs a Spark job that only reads the same rows and writes them back with a constant
column (the I/O floor). Target: <= 1.5x. Also mlflow.pyfunc.spark_udf of the same model on a slice.
Where score_batch's time goes, on --breakdown-rows of the same rows in one process: reading alone and the
model's transform alone (both to Spark's noop sink), score_batch's own path (signature check, column
selection, atomic parquet write) and a plain ``model.transform(df).write.parquet``.
Stream: micro-batch latency p50/p95 over a 100-file set (the real one when ../shared is present),
one file per trigger, and the extra wall time a SIGKILL + restart costs over an uninterrupted run.

    python bench/bench_score.py [--rows 10000000] [--udf-rows 100000] [--breakdown-rows 2000000]
"""

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REAL_DIR, ROOT, isolated_env, parsed, percentile
from common import timed as run

REAL_100P = REAL_DIR / "sf-airbnb-clean-100p.parquet"


# One process, the session warm: each step once, in this order, on the same --breakdown-rows rows.
BREAKDOWN = r"""
import json, sys, time
from sparkmlops.core.spark import get_spark
from sparkmlops.inference import resolve
from sparkmlops.score.score_batch import BatchParams, predict_batch
from sparkmlops.core import tracking
model_uri, rows_path, rows, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
spark = get_spark("bench-score-breakdown")
subset = out + "/input"
source = spark.read.parquet(rows_path)
# limit() gathers the rows into one partition: spread them over as many files as the input has, or
# every step below runs as one task on one core.
source.limit(rows).repartition(len(source.inputFiles())).write.parquet(subset)
model = resolve.resolve_model(model_uri)
pipeline = __import__("mlflow").spark.load_model(model.load_uri)
df = spark.read.parquet(subset)
pipeline.transform(df.limit(1000)).write.format("noop").mode("overwrite").save()  # warm-up
sys.path.insert(0, "bench")
from common import CpuMeter
def timed(step):
    started = time.perf_counter(); step(); return time.perf_counter() - started
figures = {"read": timed(lambda: df.write.format("noop").mode("overwrite").save())}
with CpuMeter() as meter:
    pipeline.transform(df).select("prediction").write.format("noop").mode("overwrite").save()
figures["transform"], figures["transform_cores"] = meter.seconds, meter.cores
params = BatchParams(model_uri, subset, out + "/scored")
with tracking.tracked_run("bench-score-breakdown"):
    figures["score_batch"] = timed(lambda: predict_batch(spark, params, params.validate()))
figures["plain"] = timed(lambda: pipeline.transform(df).write.parquet(out + "/plain"))
print(json.dumps(figures))
"""


def stream_latencies(stdout):
    return [float(m.group(1)) for m in re.finditer(r"batch \d+: \d+ rows in (\d+) ms", stdout)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--udf-rows", type=int, default=100_000)
    parser.add_argument("--breakdown-rows", type=int, default=2_000_000)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = isolated_env(tmp)
        _, trained = run([py, "train.py"], env)
        model_uri = f"runs:/{parsed(r'run_id=([0-9a-f]{32})', trained.stdout, 'the train run id')}/model"
        rows_path = tmp / "rows.parquet"
        gen_s, _ = run(
            [
                py,
                "generate_data.py",
                "--output_path",
                rows_path,
                "--n_rows",
                str(args.rows),
                "--n_files",
                str(args.files),
            ],
            env,
        )

        floor_s, _ = run([py, "bench/io_floor.py", rows_path, tmp / "floor.parquet"], env)
        score_s, _ = run(
            [
                py,
                "score_batch.py",
                "--model_uri",
                model_uri,
                "--input_path",
                rows_path,
                "--output_path",
                tmp / "scored.parquet",
            ],
            env,
        )
        udf_s, udf = run(
            [py, "bench/spark_udf_score.py", model_uri, rows_path, tmp / "udf.parquet", str(args.udf_rows)],
            env,
            check=False,
        )
        udf_line = (
            f"{args.udf_rows / udf_s:,.0f} rows/s end to end on {args.udf_rows:,} rows"
            if udf.returncode == 0
            else "failed: " + (udf.stderr.strip().splitlines() or ["?"])[-1][:200]
        )
        _, split = run([py, "-c", BREAKDOWN, model_uri, rows_path, str(args.breakdown_rows), tmp / "breakdown"], env)
        steps = json.loads(split.stdout.strip().splitlines()[-1])

        if REAL_100P.exists():
            stream_in = str(REAL_100P)
        else:
            stream_in = str(tmp / "stream-in")
            run([py, "generate_data.py", "--output_path", stream_in, "--n_rows", "7146", "--n_files", "100"], env)
        stream = [py, "score_stream.py", "--model_uri", model_uri, "--input_path", stream_in]
        full_s, full = run(stream + ["--output_path", tmp / "s1", "--checkpoint_path", tmp / "c1"], env)
        latencies = stream_latencies(full.stdout)
        if not latencies:
            sys.exit(f"bench_score: score_stream printed no micro-batch latencies:\n{full.stdout[-3000:]}")

        # interrupted: SIGKILL after half the batches, then the same command again
        cmd = stream + ["--output_path", str(tmp / "s2"), "--checkpoint_path", str(tmp / "c2")]
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        seen = 0
        for line in proc.stdout:
            seen += line.startswith("score_stream: batch ")
            if seen >= 50:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait()
        first_s = time.perf_counter() - started
        second_s, _ = run(cmd, env)
        time.sleep(1)

    print(f"batch: {args.rows:,} generated rows in {args.files} files (generation {gen_s:.0f} s, not timed)")
    print(f"  I/O floor (read + constant column + write): {floor_s:7.1f} s  {args.rows / floor_s:>12,.0f} rows/s")
    print(f"  score_batch end to end:                      {score_s:7.1f} s  {args.rows / score_s:>12,.0f} rows/s")
    print(f"  ratio score_batch / floor: {score_s / floor_s:.2f}x (target <= 1.5x)")
    print(f"  mlflow.pyfunc.spark_udf of the same model: {udf_line}")
    n = args.breakdown_rows
    print(f"where the time goes, {n:,} of those rows in one warm process:")
    print(f"  read alone (noop sink):                      {steps['read']:7.1f} s")
    print(
        f"  the model's transform, prediction only (noop): {steps['transform']:5.1f} s on "
        f"{steps['transform_cores']:.2f} cores used = {steps['transform'] * steps['transform_cores'] / n * 1e6:.1f} "
        "us per row per core"
    )
    print(f"  score_batch's path (check, select, atomic parquet write): {steps['score_batch']:.1f} s")
    print(f"  plain model.transform(df).write.parquet (all pipeline columns): {steps['plain']:.1f} s")
    print(f"stream: {stream_in}, 1 file per trigger, {len(latencies)} micro-batches in {full_s:.1f} s")
    print(
        f"  micro-batch latency p50 {statistics.median(latencies):.0f} ms, p95 {percentile(latencies, 0.95):.0f} ms "
        f"({len(latencies)} samples: no p99)"
    )
    print(
        f"  SIGKILL after 50 batches + restart: {first_s:.1f} s + {second_s:.1f} s = {first_s + second_s:.1f} s; "
        f"extra over uninterrupted: {first_s + second_s - full_s:.1f} s"
    )


if __name__ == "__main__":
    main()
