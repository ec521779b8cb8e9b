"""Benchmark: `mlflow run . --env-manager local` (train) end to end vs the book's straightforward script.

Both train numTrees=100, maxDepth=5 on the same data in the same run, against the same fresh SQLite
tracking store, alternating (book, project, book, project, ...). Prints each one's median seconds, its
test rmse (each on its own test rows: the book's pipeline drops rows with categories its training split
never saw, the project's keeps them) and the ratio project / reference (target: <= 0.5). Then one more
`python train.py` under cProfile, whose
per-step breakdown (wall seconds of the main thread in each step) says where the project's time goes.
With --warm, a third arm: the same `mlflow run` over a warm local Spark (`make spark-up`: one Spark
Connect server the runs reuse, started and warmed by one untimed run before the timings, stopped after);
its rmse must equal the cold run's (target: <= 0.3x the book's script). The cold project runs use the
Spark class archive (`make spark-archive`, built first if missing); one more arm times them without it
(SPARKMLOPS_CLASS_ARCHIVE=off).

    python bench/bench_train.py [--data PATH] [--repeat N] [--warm]

Without --data it uses ../shared/data/sf-airbnb/sf-airbnb-clean.parquet if present, else the generated
default dataset.
"""

import argparse
import pstats
import statistics
import sys
import tempfile
from pathlib import Path

from common import REAL_DIR, ROOT, bench_setup, parsed
from common import timed as run_checked

REAL = REAL_DIR / "sf-airbnb-clean.parquet"


def timed(cmd, env):
    """(seconds, the command's output); stops if the command printed no rmse."""
    seconds, result = run_checked(cmd, env)
    output = result.stdout + result.stderr
    parsed(r"rmse=([0-9.]+)", output, "rmse")
    return seconds, output


def rmse(output: str) -> float:
    return float(parsed(r"rmse=([0-9.]+)", output, "rmse"))


# The steps of a train run, as (label, functions whose cumulative main-thread time makes it, functions
# whose time is subtracted); a function is (file name ending, function name).
RUN_ENTRY_POINT = ("core/jobs.py", "run_entry_point")
TRAIN_AND_LOG = ("train/train.py", "train_and_log")
JVM_WAIT = [("concurrent/futures/_base.py", "result"), ("core/jobs.py", "_import_while_waiting")]
LOAD = ("data/splits.py", "load_labelled")
PREPARE = ("data/splits.py", "prepare_data")
FIT = ("fitting/spark_pipeline.py", "fit_pipeline")
EVALUATE_LOG = ("fitting/spark_pipeline.py", "fit_evaluate_log")
LOG_MODEL = ("core/mlflow_models.py", "log_spark_model")
STEPS = [
    ("Python start and imports, until main()", [None], [("core/cli.py", "run")]),
    ("MLflow run, params and tags (the JVM starting meanwhile)", [RUN_ENTRY_POINT], [TRAIN_AND_LOG, *JVM_WAIT]),
    ("waiting for the JVM after that (warm imports meanwhile)", JVM_WAIT, []),
    ("read and check the data (profile, digest: one pass)", [LOAD], []),
    ("split, train digest, datasets", [PREPARE], [LOAD]),
    ("fit", [FIT], []),
    ("evaluate, importances, figures", [EVALUATE_LOG], [FIT, LOG_MODEL]),
    ("log the model (save, serving-example check, upload)", [LOG_MODEL], []),
]


def step_breakdown(profile_path: str) -> list[tuple[str, float]]:
    """(step, seconds) of one profiled train run; None in STEPS stands for the whole process."""
    stats = pstats.Stats(profile_path)
    cumulative = {}
    for (filename, _, function), (_, _, _, cum, _) in stats.stats.items():
        for wanted in {f for _, plus, minus in STEPS for f in plus + minus if f}:
            if filename.endswith(wanted[0]) and function == wanted[1]:
                cumulative[wanted] = cumulative.get(wanted, 0.0) + cum
    total = stats.total_tt

    def seconds(function):
        return total if function is None else cumulative.get(function, 0.0)

    return [(label, sum(map(seconds, plus)) - sum(map(seconds, minus))) for label, plus, minus in STEPS] + [
        ("total (under cProfile)", total)
    ]


def train_metrics(env: dict) -> dict[str, set]:
    """The project runs' (rmse, r2, mae), to full precision, from the store: {"cold": {...}, "warm": {...}}
    (a run over the warm server has a Connect `spark_master` tag: "<remote> (server master ...)")."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(env["MLFLOW_EXPERIMENT_NAME"]).experiment_id
    found: dict[str, set] = {"cold": set(), "warm": set()}
    for run in client.search_runs([experiment], "tags.entry_point = 'train'", max_results=1000):
        kind = "warm" if "server master" in run.data.tags.get("spark_master", "") else "cold"
        found[kind].add(tuple(run.data.metrics[m] for m in ("rmse", "r2", "mae")))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="")
    parser.add_argument("--repeat", type=int, default=3, help="alternating pairs; the medians are reported")
    parser.add_argument("--warm", action="store_true", help="also time the project on a warm Spark (make spark-up)")
    args = parser.parse_args()

    bin_dir = str(Path(sys.executable).parent)
    with tempfile.TemporaryDirectory() as tmp:
        env, data = bench_setup(Path(tmp), args.data, REAL)
        project_cmd = [
            str(Path(bin_dir) / "mlflow"),
            "run",
            ".",
            "--env-manager",
            "local",
            "-P",
            f"data_path={data}",
            "-P",
            "num_trees=100",
            "-P",
            "max_depth=5",
        ]
        book_cmd = [sys.executable, str(ROOT / "bench" / "book_train.py"), data]
        run_checked([sys.executable, "-m", "tools.class_archive", "build"], env)
        no_archive_env = {**env, "SPARKMLOPS_CLASS_ARCHIVE": "off"}
        project, book, warm, no_archive = [], [], [], []
        warm_env = {**env, "SPARK_LOCAL_CONNECT_DISCOVERY": str(Path(tmp) / "connect-local.json")}
        try:
            if args.warm:
                run_checked([sys.executable, "-m", "tools.warm_spark", "up"], warm_env)
                warm_env.update(SPARK_REMOTE="local[*]", SPARK_LOCAL_CONNECT_REUSE="1")
                timed(project_cmd, warm_env)  # the server's first job: its JIT warms up
            for _ in range(args.repeat):
                book.append(timed(book_cmd, env))
                project.append(timed(project_cmd, env))
                no_archive.append(timed(project_cmd, no_archive_env))
                if args.warm:
                    warm.append(timed(project_cmd, warm_env))
        finally:
            if args.warm:
                run_checked([sys.executable, "-m", "tools.warm_spark", "down"], warm_env)
        metrics = train_metrics(env) if args.warm else {}
        profile_path = str(Path(tmp) / "train.prof")
        timed([sys.executable, "-m", "cProfile", "-o", profile_path, str(ROOT / "train.py"), "--data_path", data], env)
        breakdown = step_breakdown(profile_path)

    book_s = statistics.median(s for s, _ in book)
    project_s = statistics.median(s for s, _ in project)
    print(f"data: {data}; {args.repeat} alternating pairs, medians")
    print("| train, 100 trees, depth 5 | seconds (median) | runs | test rmse |")
    print("|---|---|---|---|")
    kept = parsed(r"test_rows=(\d+ of \d+)", book[0][1], "the book's test rows")
    print(
        f"| book script (`bench/book_train.py`, MLflow's default model logging) | {book_s:.1f} | "
        f"{', '.join(f'{s:.1f}' for s, _ in book)} | {rmse(book[0][1]):.2f} (the {kept} test rows it keeps) |"
    )
    print(
        f"| project (`mlflow run . --env-manager local`) | {project_s:.1f} | "
        f"{', '.join(f'{s:.1f}' for s, _ in project)} | {rmse(project[0][1]):.2f} (every test row) |"
    )
    no_archive_s = statistics.median(s for s, _ in no_archive)
    print(
        f"| project without the Spark class archive (`make spark-archive`) | {no_archive_s:.1f} | "
        f"{', '.join(f'{s:.1f}' for s, _ in no_archive)} | {rmse(no_archive[0][1]):.2f} |"
    )
    warm_s = statistics.median(s for s, _ in warm) if warm else None
    if warm:
        same = metrics["warm"] == metrics["cold"] and len(metrics["cold"]) == 1
        print(
            f"| project on a warm Spark (`make spark-up`, then the same `mlflow run`) | {warm_s:.1f} | "
            f"{', '.join(f'{s:.1f}' for s, _ in warm)} | {rmse(warm[0][1]):.2f} "
            f"({'the same as' if same else 'DIFFERENT FROM'} the cold runs') |"
        )
    print(f"ratio project/reference: {project_s / book_s:.2f}x (target <= 0.50x)")
    print(f"ratio project without the class archive/reference: {no_archive_s / book_s:.2f}x")
    if warm:
        print(f"ratio warm project/reference: {warm_s / book_s:.2f}x (target <= 0.30x)")
    print()
    print("| step of `python train.py` (one run under cProfile, main thread) | seconds | share |")
    print("|---|---|---|")
    total = breakdown[-1][1]
    for label, seconds in breakdown:
        print(f"| {label} | {seconds:.1f} | {seconds / total:.0%} |")


if __name__ == "__main__":
    main()
