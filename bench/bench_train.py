"""Benchmark: `mlflow run . --env-manager local` (train) end to end vs the book's straightforward script.

Both train numTrees=100, maxDepth=5 on the same data in the same run, against the same fresh SQLite
tracking store, alternating (book, project, book, project, ...). Prints each one's median seconds, its
test rmse (each on its own test rows: the book's pipeline drops rows with categories its training split
never saw, the project's keeps them) and the ratio project / reference (target: <= 0.4).

    python bench/bench_train.py [--data PATH] [--repeat N]

Without --data it uses ../shared/data/sf-airbnb/sf-airbnb-clean.parquet if present, else the generated
default dataset.
"""

import argparse
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="")
    parser.add_argument("--repeat", type=int, default=3, help="alternating pairs; the medians are reported")
    args = parser.parse_args()

    bin_dir = str(Path(sys.executable).parent)
    with tempfile.TemporaryDirectory() as tmp:
        env, data = bench_setup(Path(tmp), args.data, REAL)
        project_cmd = [str(Path(bin_dir) / "mlflow"), "run", ".", "--env-manager", "local",
                       "-P", f"data_path={data}", "-P", "num_trees=100", "-P", "max_depth=5"]
        book_cmd = [sys.executable, str(ROOT / "bench" / "book_train.py"), data]
        project, book = [], []
        for _ in range(args.repeat):
            book.append(timed(book_cmd, env))
            project.append(timed(project_cmd, env))

    book_s = statistics.median(s for s, _ in book)
    project_s = statistics.median(s for s, _ in project)
    print(f"data: {data}; {args.repeat} alternating pairs, medians")
    print("| train, 100 trees, depth 5 | seconds (median) | runs | test rmse |")
    print("|---|---|---|---|")
    kept = parsed(r"test_rows=(\d+ of \d+)", book[0][1], "the book's test rows")
    print(f"| book script (`bench/book_train.py`, MLflow's default model logging) | {book_s:.1f} | "
          f"{', '.join(f'{s:.1f}' for s, _ in book)} | {rmse(book[0][1]):.2f} (the {kept} test rows it keeps) |")
    print(f"| project (`mlflow run . --env-manager local`) | {project_s:.1f} | "
          f"{', '.join(f'{s:.1f}' for s, _ in project)} | {rmse(project[0][1]):.2f} (every test row) |")
    print(f"ratio project/reference: {project_s / book_s:.2f}x (target <= 0.40x)")


if __name__ == "__main__":
    main()
