"""Real-time serving benchmark: the ONNX export vs the Spark model, both behind `mlflow models serve`.

In one run: train the book's forest (`mlflow run`-equivalent script, real data when ../shared is present),
export it with export_onnx, serve both models on 127.0.0.1 (--env-manager local), then send single-record
JSON requests at concurrency 1, 4 and 16 and report latency p50/p99 (p99 only from at least 1,000
requests: the Spark model's 60 per level give a p50), throughput and errors. Targets:
export p99 <= 10 ms at concurrency 1, >= 50x the Spark model's throughput, 10,000 requests at
concurrency 16 without errors. Also in-process batch scoring: the export's pyfunc code vs Spark's
transform on the same rows.

    python bench/bench_serve.py [--requests 10000] [--spark-requests 60] [--batch-rows 200000]
"""

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REAL_DIR, ROOT, bench_setup, parsed, tail_latency, timed

sys.path.insert(0, str(ROOT))
from tools import model_server  # noqa: E402

REAL = REAL_DIR / "sf-airbnb-clean.parquet"


def serve(model_uri: str, env: dict, log: Path):
    """(process, port, seconds to ready) of `mlflow models serve` on 127.0.0.1 (tools.model_server)."""
    started = time.perf_counter()
    try:
        process, url = model_server.start(model_uri, log, env, timeout=300)
    except model_server.ServerDidNotStart as exc:
        sys.exit(f"model server for {model_uri} did not start: {exc}")
    return process, int(url.rsplit(":", 1)[1]), time.perf_counter() - started


def load(port: int, bodies: list[bytes], concurrency: int, total: int) -> dict:
    """``total`` single-record requests from ``concurrency`` keep-alive clients. A request that fails (a
    connection error or a status other than 200) counts once, as an error; latencies and requests/s are
    those of the requests that succeeded."""
    latencies, errors, lock, counter = [], [], threading.Lock(), iter(range(total))

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            began, error = time.perf_counter(), None
            try:
                connection.request(
                    "POST", "/invocations", body=bodies[i % len(bodies)], headers={"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    error = f"status {response.status}"
            except OSError as exc:
                error, connection = str(exc), http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            elapsed = (time.perf_counter() - began) * 1000
            with lock:
                (latencies if error is None else errors).append(elapsed if error is None else error)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "rps": len(latencies) / seconds,
        "p50": statistics.median(ordered) if ordered else float("nan"),
        "p99": tail_latency(ordered, 0.99) if ordered else "n/a",
    }


def batch_rates(data: str, spark_uri: str, onnx_uri: str, rows: int, env: dict) -> dict:
    """rows/s of the export's pyfunc code and of Spark's transform on the same rows, in one process."""
    code = f"""
import json, time, mlflow, pandas as pd
from sparkmlops.core.spark import get_spark
spark = get_spark("bench-serve", master="local[2]", conf={{"spark.ui.enabled": "false"}})
base = spark.read.parquet({data!r}).drop("price")
frame = base.toPandas()
frame = pd.concat([frame] * (({rows} + len(frame) - 1) // len(frame)), ignore_index=True).iloc[:{rows}]
df = spark.createDataFrame(frame, schema=base.schema).cache(); df.count()
model = mlflow.spark.load_model({spark_uri!r})
model.transform(df.limit(1000)).agg({{"prediction": "sum"}}).collect()
t = time.perf_counter(); model.transform(df).agg({{"prediction": "sum"}}).collect(); spark_s = time.perf_counter() - t
onnx = mlflow.pyfunc.load_model({onnx_uri!r})
onnx.predict(frame.iloc[:1000])
t = time.perf_counter(); onnx.predict(frame); onnx_s = time.perf_counter() - t
print(json.dumps({{"spark": {rows} / spark_s, "onnx": {rows} / onnx_s}}))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def handler_breakdown(data: str, onnx_uri: str, env: dict, repeat: int = 300) -> dict:
    """Where one single-record request's server time goes, in-process: MLflow's whole /invocations
    handler (JSON parsing and casting to the signature, schema enforcement, predict, JSON out) vs the
    exported model's own predict (feeds + onnxruntime)."""
    code = f"""
import json, time, mlflow, pandas as pd
from mlflow.pyfunc import scoring_server as ss
model = mlflow.pyfunc.load_model({onnx_uri!r})
row = pd.read_parquet({data!r}).drop(columns=["price"]).head(1)
body = json.dumps({{"dataframe_records": row.to_dict(orient="records")}})
schema = model.metadata.get_input_schema()
inner = model.unwrap_python_model().pipeline
def per_call(f):
    for _ in range(20): f()
    t = time.perf_counter()
    for _ in range({repeat}): f()
    return (time.perf_counter() - t) / {repeat} * 1000
print(json.dumps({{"handler_ms": per_call(lambda: ss.invocations(body, "application/json", model, schema)),
                  "export_predict_ms": per_call(lambda: inner.predict(row))}}))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="")
    parser.add_argument("--requests", type=int, default=10_000, help="export requests per concurrency level")
    parser.add_argument("--spark-requests", type=int, default=60, help="Spark model requests per level")
    parser.add_argument("--batch-rows", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        run(args, Path(tmp))


def run(args, tmp: Path):
    """Train, export, serve and load both models; the tracking store and server logs live in tmp."""
    env, data = bench_setup(tmp, args.data, REAL)

    _, trained = timed([sys.executable, "train.py", "--data_path", data, "--max_bins", "40"], env)
    spark_uri = f"runs:/{parsed(r'run_id=([0-9a-f]{32})', trained.stdout, 'the train run id')}/model"
    export_s, exported = timed([sys.executable, "export_onnx.py", "--model_uri", spark_uri], env)
    onnx_uri = parsed(r" model (\S+)", exported.stdout, "the exported model's URI")
    print(exported.stdout.strip().splitlines()[-1])

    import pandas as pd

    records = pd.read_parquet(data).drop(columns=["price"]).head(500).to_dict(orient="records")
    bodies = [json.dumps({"dataframe_records": [r]}).encode() for r in records]
    results = {}
    for name, uri, total in (("onnx", onnx_uri, args.requests), ("spark", spark_uri, args.spark_requests)):
        process, port, startup = serve(uri, env, tmp / f"serve-{name}.log")
        try:
            load(port, bodies, 4, min(200, total))  # warm-up
            results[name] = {"startup_s": startup, **{c: load(port, bodies, c, total) for c in (1, 4, 16)}}
        finally:
            model_server.stop(process)

    print(f"\nserving, single-record requests (data: {data}); export took {export_s:.1f} s")
    print(
        "| model | concurrency | requests | errors | p50 ms | p99 ms (from >= 1,000 samples) | requests/s (succeeded) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in ("onnx", "spark"):
        for c in (1, 4, 16):
            r = results[name][c]
            print(
                f"| {name} | {c} | {r['requests']:,} | {r['errors']} | {r['p50']:.1f} | {r['p99']} | {r['rps']:.1f} |"
            )
    print(f"server start: onnx {results['onnx']['startup_s']:.1f} s, spark {results['spark']['startup_s']:.1f} s")
    for c in (1, 4, 16):
        print(
            f"throughput ratio at concurrency {c}: {results['onnx'][c]['rps'] / results['spark'][c]['rps']:.0f}x "
            "(target >= 50x)"
        )
    print(
        f"export p99 at concurrency 1: {results['onnx'][1]['p99']} ms (target <= 10 ms); "
        f"errors at concurrency 16: {results['onnx'][16]['errors']} of {results['onnx'][16]['requests']:,}"
    )
    parts = handler_breakdown(data, onnx_uri, env)
    print(
        f"one request in-process: MLflow's /invocations handler {parts['handler_ms']:.2f} ms, of which the "
        f"export's own predict {parts['export_predict_ms']:.2f} ms; the rest of the p50 at concurrency 1 "
        f"(HTTP, the server's event loop, the client on the same cores): "
        f"{results['onnx'][1]['p50'] - parts['handler_ms']:.1f} ms"
    )
    rates = batch_rates(data, spark_uri, onnx_uri, args.batch_rows, env)
    print(
        f"in-process batch, {args.batch_rows} rows: export {rates['onnx']:.0f} rows/s (1 thread), Spark transform "
        f"{rates['spark']:.0f} rows/s (local[2]) = {rates['onnx'] / rates['spark']:.2f}x"
    )


if __name__ == "__main__":
    main()
