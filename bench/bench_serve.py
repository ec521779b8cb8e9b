"""Real-time serving benchmark: `serve` vs `mlflow models serve`, same export, same requests, one run.

Trains the book's forest (100 trees, depth 8, maxBins 40) on the real data when ../shared is present,
exports it with export_onnx and registers the export three times (versions 1-3: the same graph, so any
version answers identically). Then serves version 1 with `mlflow models serve --env-manager local` and
`models:/<name>@champion` with `serve` (one worker, polling the registry every 0.5 s) and sends
single-record JSON requests from keep-alive clients on the same 2 cores:

- concurrency 1, ``--samples`` requests each: p50 and p99 (targets for serve: p50 <= 2 ms, p99 <= 5 ms);
- concurrency 16, ``--requests`` to serve while the alias moves three times (1 -> 2 -> 3 -> 1): requests/s
  (target >= 1,000), errors (target 0) and the versions the X-Model-Version header showed, in order;
- every real row, in requests of 500 rows, to both servers: predictions identical (==);
- in-process, where one request's time goes in serve (parse, check, predict, serialise) and MLflow's
  whole handler for the same body.

It also serves the Spark model with `mlflow models serve` (``--spark-requests`` per level: the reason
to export) and compares batch scoring in-process.

    python bench/bench_serve.py [--samples 5000] [--requests 10000] [--spark-requests 60] [--batch-rows 200000]
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

from common import REAL_DIR, ROOT, bench_setup, parsed, percentile, tail_latency, timed

sys.path.insert(0, str(ROOT))
from tools import model_server  # noqa: E402

REAL = REAL_DIR / "sf-airbnb-clean.parquet"
NAME = "bench_price_onnx"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def load(port: int, bodies: list[bytes], concurrency: int, total: int, on_progress=None) -> dict:
    """``total`` requests from ``concurrency`` keep-alive clients. A failed request (a connection error or a
    status other than 200) counts once, as an error; latencies and requests/s are the successes'.
    ``on_progress(done)`` is called by one client after every 100 requests (the alias mover)."""
    latencies, errors, versions, lock, counter = [], [], [], threading.Lock(), iter(range(total))

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            began, error, version = time.perf_counter(), None, None
            try:
                connection.request(
                    "POST", "/invocations", body=bodies[i % len(bodies)], headers={"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                response.read()
                version = response.getheader("X-Model-Version")
                if response.status != 200:
                    error = f"status {response.status}"
            except OSError as exc:
                error, connection = str(exc), http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            elapsed = (time.perf_counter() - began) * 1000
            with lock:
                (latencies if error is None else errors).append(elapsed if error is None else error)
                if version and (not versions or versions[-1] != version):
                    versions.append(version)
            if on_progress and i % 100 == 0:
                on_progress(i)

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
        "p99_value": percentile(ordered, 0.99) if len(ordered) >= 1000 else float("nan"),
        "versions": versions,
    }


def alias_mover(env: dict, total: int, moves: list[str]):
    """An on_progress callback moving @champion to ``moves[k]`` when the k-th quarter of ``total`` is done
    (in a thread: the registry write must not stall the client that reached the mark)."""
    marks = [total * (k + 1) // (len(moves) + 1) for k in range(len(moves))]
    done, lock = [], threading.Lock()

    from mlflow import MlflowClient  # imported here, before the load starts

    registry = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])

    def move(version: str):
        registry.set_registered_model_alias(NAME, "champion", version)

    def on_progress(i: int):
        with lock:
            due = [k for k, mark in enumerate(marks) if i >= mark and k not in done]
            done.extend(due)
        for k in due:
            threading.Thread(target=move, args=(moves[k],)).start()

    on_progress.moves = done
    return on_progress


def same_predictions(urls: list[str], records: list[dict], rows_per_request: int = 500) -> tuple[int, int]:
    """(rows compared, rows whose answers differ) between servers, every row sent once to each."""
    differ = 0
    for start in range(0, len(records), rows_per_request):
        body = json.dumps({"dataframe_records": records[start : start + rows_per_request]}).encode()
        answers = []
        for url in urls:
            status, answer = model_server.post_invocations(url, body, timeout=120)
            if status != 200:
                sys.exit(f"{url} answered {status}: {str(answer)[:500]}")
            answers.append(answer["predictions"])
        differ += sum(a != b for a, b in zip(*answers))
    return len(records), differ


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


def breakdown(data: str, onnx_uri: str, env: dict, repeat: int = 2000) -> dict:
    """Where one single-record request's server time goes, in-process, in ms: serve's fast path step by step
    (parse, check, predict, serialise) and MLflow's whole /invocations handler on the same body."""
    code = f"""
import json, time, orjson, mlflow, pandas as pd
from mlflow.pyfunc import scoring_server as ss
from sparkmlops.serve import model_follower, scoring_protocol
model = model_follower.load({onnx_uri!r}, "1")
fast = model.fast
row = pd.read_parquet({data!r}).drop(columns=["price"]).head(1)
body = json.dumps({{"dataframe_records": row.to_dict(orient="records")}}).encode()
payload = orjson.loads(body)
columns = scoring_protocol.columns_of(payload, fast.required)
outputs = fast.outputs(columns)
def check():
    columns = scoring_protocol.columns_of(payload, fast.required)
    for name, accepts, _ in fast.checks:
        accepts(columns[name])
def per_call(f):
    for _ in range(50): f()
    t = time.perf_counter()
    for _ in range({repeat}): f()
    return (time.perf_counter() - t) / {repeat} * 1000
print(json.dumps({{
    "parse": per_call(lambda: orjson.loads(body)),
    "check": per_call(check),
    "predict": per_call(lambda: fast.outputs(columns)),
    "serialise": per_call(lambda: fast.predictions(outputs)),
    "whole": per_call(lambda: fast.answer(body)),
    "mlflow_handler": per_call(lambda: ss.invocations(body, "application/json", model.pyfunc, model.input_schema)),
}}))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="")
    parser.add_argument("--samples", type=int, default=5_000, help="requests at concurrency 1, per server")
    parser.add_argument("--requests", type=int, default=10_000, help="requests to serve at concurrency 16")
    parser.add_argument("--spark-requests", type=int, default=60, help="Spark model requests per level")
    parser.add_argument("--batch-rows", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        run(args, Path(tmp))


def run(args, tmp: Path):
    """Train, export, register, serve and load; the tracking store and server logs live in tmp."""
    env, data = bench_setup(tmp, args.data, REAL)
    train = [sys.executable, "train.py", "--data_path", data, "--num_trees", "100", "--max_depth", "8"]
    _, trained = timed([*train, "--max_bins", "40"], env)
    spark_uri = f"runs:/{parsed(r'run_id=([0-9a-f]{32})', trained.stdout, 'the train run id')}/model"
    export_s, exported = timed([sys.executable, "export_onnx.py", "--model_uri", spark_uri, "--register_as", NAME], env)
    onnx_uri = parsed(r" model (\S+)", exported.stdout, "the exported model's URI")
    register = f"import mlflow; [mlflow.register_model({onnx_uri!r}, {NAME!r}) for _ in range(2)]; " + (
        f"mlflow.MlflowClient().set_registered_model_alias({NAME!r}, 'champion', '1')"
    )
    timed([sys.executable, "-c", register], env)

    import pandas as pd

    records = json.loads(pd.read_parquet(data).drop(columns=["price"]).to_json(orient="records"))
    bodies = [json.dumps({"dataframe_records": [r]}).encode() for r in records[:500]]
    results = {}
    served, mlflow_served = (
        model_server.start_serve(f"models:/{NAME}@champion", tmp / "serve.log", env, options=("--poll_seconds", "0.5")),
        model_server.start(f"models:/{NAME}/1", tmp / "mlflow-serve.log", env, timeout=300),
    )
    try:
        urls = {"serve": served[1], "mlflow models serve": mlflow_served[1]}
        for name, url in urls.items():
            load(port_of(url), bodies, 4, 500)  # warm-up
            results[name, 1] = load(port_of(url), bodies, 1, args.samples)
        mover = alias_mover(env, args.requests, ["2", "3", "1"])
        results["serve", 16] = load(port_of(urls["serve"]), bodies, 16, args.requests, mover)
        results["mlflow models serve", 16] = load(port_of(urls["mlflow models serve"]), bodies, 16, 2000)
        compared, differ = same_predictions(list(urls.values()), records)
    finally:
        model_server.stop(served[0])
        model_server.stop(mlflow_served[0])
    spark_process, spark_url = model_server.start(spark_uri, tmp / "spark-serve.log", env, timeout=300)
    try:
        load(port_of(spark_url), bodies, 1, 10)
        results["Spark model (mlflow models serve)", 1] = load(port_of(spark_url), bodies, 1, args.spark_requests)
    finally:
        model_server.stop(spark_process)

    print(f"\nsingle-record requests (data: {data}); export took {export_s:.1f} s")
    print(
        "| server | concurrency | requests | errors | p50 ms | p99 ms (from >= 1,000 samples) | requests/s | versions |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (name, c), r in results.items():
        versions = " -> ".join(r["versions"]) if name == "serve" else ""
        figures = f"{r['requests']:,} | {r['errors']} | {r['p50']:.2f} | {r['p99']} | {r['rps']:.0f}"
        print(f"| {name} | {c} | {figures} | {versions} |")
    ours, theirs, busy = results["serve", 1], results["mlflow models serve", 1], results["serve", 16]
    print(
        f"serve at concurrency 1: p50 {ours['p50']:.2f} ms (target <= 2), p99 {ours['p99']} ms (target <= 5); "
        f"{theirs['p50'] / ours['p50']:.1f}x faster than mlflow models serve at p50"
    )
    print(
        f"serve at concurrency 16: {busy['rps']:.0f} requests/s (target >= 1,000), {busy['errors']} errors in "
        f"{busy['requests']:,} (target 0), alias moved {len(mover.moves)} times, "
        f"versions answering: {' -> '.join(busy['versions'])}"
    )
    print(f"predictions: {compared:,} real rows to both servers, {differ} differ")
    parts = breakdown(data, f"models:/{NAME}/1", env)
    steps = "parse {parse:.3f}, check {check:.3f}, predict {predict:.3f}, serialise {serialise:.3f}".format(**parts)
    print(
        f"one request in-process, ms: {steps} (serve's fast path, whole {parts['whole']:.3f}); "
        f"MLflow's /invocations handler {parts['mlflow_handler']:.3f}"
    )
    rates = batch_rates(data, spark_uri, onnx_uri, args.batch_rows, env)
    print(
        f"in-process batch, {args.batch_rows} rows: export {rates['onnx']:.0f} rows/s (1 thread), Spark transform "
        f"{rates['spark']:.0f} rows/s (local[2]) = {rates['onnx'] / rates['spark']:.2f}x"
    )


if __name__ == "__main__":
    main()
