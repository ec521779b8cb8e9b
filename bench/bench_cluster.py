"""train and score_batch on local[2] (the baseline) vs a standalone cluster (a master and two 1-core
workers) vs Spark Connect (a server on local[2]), one run each, all on this machine.

The cluster and the Connect server are started by tools.local_cluster on 127.0.0.1 (each daemon binds a
free port) before the timings and stopped by PID at the end. Each timing is the whole `python <script>`
process (JVM or Connect client start, Spark work, MLflow logging), as a user runs it. Over Connect the
server is warm (it served the earlier runs); a last row restarts it and times train on the cold server,
its start included: what the first job of the day pays. The scored input is the training data (the real
data when ../shared is present), replicated to --score-rows rows.

    python bench/bench_cluster.py [--num-trees 100] [--score-rows 1000000]
"""

import argparse
import sys
import tempfile
from pathlib import Path

from common import REAL_DIR, ROOT, bench_setup, parsed, timed

sys.path.insert(0, str(ROOT))
from tools import local_cluster  # noqa: E402

QUIET = "--conf spark.ui.showConsoleProgress=false --conf spark.sql.shuffle.partitions=4"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-trees", type=int, default=100)
    parser.add_argument("--score-rows", type=int, default=1_000_000)
    parser.add_argument("--data", default="", help="training data; default: the real data, else generated")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp_name:
        tmp = Path(tmp_name)
        env, data = bench_setup(tmp, args.data, REAL_DIR / "sf-airbnb-clean.parquet")
        score_input = str(tmp / "score-input")
        timed(
            [
                sys.executable,
                "-c",
                f"""
from sparkmlops.core.spark import get_spark
from sparkmlops.data.writing import write_parquet_atomically
spark = get_spark('prepare', 'local[2]')
df = spark.read.parquet({data!r})
n = df.count()
copies = -(-{args.score_rows} // n)
big = df.crossJoin(spark.range(copies).withColumnRenamed('id', '_copy')).drop('_copy').limit({args.score_rows})
write_parquet_atomically(big.repartition(8), {score_input!r})
""",
            ],
            {**env, "PYSPARK_SUBMIT_ARGS": f"--master local[2] {QUIET} pyspark-shell"},
        )

        cluster = local_cluster.Cluster(
            state_dir=str(tmp / "cluster"),
            master_port=0,
            master_ui_port=0,
            worker_ui_ports=[0, 0],
            connect=True,
            connect_port=0,
        )
        modes = {
            "local[2]": {**env, "PYSPARK_SUBMIT_ARGS": f"--master local[2] {QUIET} pyspark-shell"},
            "standalone (2 workers x 1 core)": {
                **env,
                **cluster.env(),
                "PYSPARK_PYTHON": sys.executable,
                "PYSPARK_SUBMIT_ARGS": f"{QUIET} pyspark-shell",
            },
            "Spark Connect (server on local[2])": {**env},
        }
        local_cluster.start(cluster, workers=2, timeout=240)
        modes["Spark Connect (server on local[2])"]["SPARK_REMOTE"] = cluster.remote_url  # its port is known now
        results = {}
        try:
            for mode, mode_env in modes.items():
                print(f"{mode}: train ...", flush=True)
                train_s, result = timed(
                    [sys.executable, "train.py", "--data_path", data, "--num_trees", args.num_trees], mode_env
                )
                run_id = parsed(r"run_id=([0-9a-f]{32})", result.stdout, "the train run id")
                print(f"{mode}: score_batch ...", flush=True)
                score_s, _ = timed(
                    [
                        sys.executable,
                        "score_batch.py",
                        "--model_uri",
                        f"runs:/{run_id}/model",
                        "--input_path",
                        score_input,
                        "--output_path",
                        str(tmp / f"scored-{len(results)}"),
                    ],
                    mode_env,
                )
                rmse = parsed(r"rmse=([0-9.]+)", result.stdout, "rmse")
                results[mode] = (train_s, score_s, rmse)
            # A cold Connect server: started afresh, then train at once (the server's start is in the time).
            print("Spark Connect, cold server: restart + train ...", flush=True)
            server_s = local_cluster.restart_connect_server(cluster)
            cold_train_s, cold = timed(
                [sys.executable, "train.py", "--data_path", data, "--num_trees", args.num_trees],
                {**env, "SPARK_REMOTE": cluster.remote_url},
            )
            cold_rmse = parsed(r"rmse=([0-9.]+)", cold.stdout, "rmse")
            # Not in the test suite (too slow for it): the SparkTrials search on the cluster's executors.
            mode = "standalone (2 workers x 1 core)"
            print(f"{mode}: tune_hyperopt engine=sklearn ...", flush=True)
            tune_s, tuned = timed(
                [
                    sys.executable,
                    "tune_hyperopt.py",
                    "--data_path",
                    data,
                    "--engine",
                    "sklearn",
                    "--max_evals",
                    "4",
                    "--parallelism",
                    "2",
                ],
                modes[mode],
            )
            tune_line = parsed(r"(tune_hyperopt: best .*)", tuned.stdout, "tune_hyperopt's summary line")
        finally:
            local_cluster.stop(cluster)

    base_train, base_score, _ = results["local[2]"]
    print(
        f"\ntrain ({args.num_trees} trees, {Path(data).name}) and score_batch ({args.score_rows:,} rows), "
        "whole process, one run:"
    )
    print("| mode | train s | vs local[2] | score_batch s | vs local[2] | train rmse |")
    print("|---|---|---|---|---|---|")
    for mode, (train_s, score_s, rmse) in results.items():
        print(
            f"| {mode} | {train_s:.1f} | {train_s / base_train:.2f}x | {score_s:.1f} | "
            f"{score_s / base_score:.2f}x | {rmse} |"
        )
    cold_s = server_s + cold_train_s
    print(
        f"| Spark Connect, cold server: its start ({server_s:.1f} s) + train | {cold_s:.1f} | "
        f"{cold_s / base_train:.2f}x | | | {cold_rmse} |"
    )
    print(
        f"\ntune_hyperopt engine=sklearn, 4 trials, parallelism 2, on the standalone cluster: {tune_s:.1f} s\n"
        f"  {tune_line}"
    )


if __name__ == "__main__":
    main()
