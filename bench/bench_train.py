"""Benchmark: `mlflow run . --env-manager local` (train) end to end vs the book's straightforward script.

Both train numTrees=100, maxDepth=5 on the same data in the same run, against the same fresh SQLite
tracking store, one after the other (alternating when repeated). Prints seconds and the ratio
project / reference (target: <= 0.4).

    python bench/bench_train.py [--data PATH] [--repeat N]

Without --data it uses ../shared/data/sf-airbnb/sf-airbnb-clean.parquet if present, else the generated
default dataset.
"""

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

from common import REAL_DIR, ROOT, bench_setup
from common import timed as run_checked

REAL = REAL_DIR / "sf-airbnb-clean.parquet"


def timed(cmd, env):
    """(seconds, rmse printed by the command)."""
    seconds, result = run_checked(cmd, env)
    rmse = re.search(r"rmse=([0-9.]+)", result.stdout + result.stderr)
    return seconds, float(rmse.group(1)) if rmse else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="")
    parser.add_argument("--repeat", type=int, default=1)
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
    print(f"data: {data}")
    print(f"reference (book script, default model logging): {book_s:6.1f} s  rmse={book[0][1]:.2f}")
    print(f"project   (mlflow run . --env-manager local):    {project_s:6.1f} s  rmse={project[0][1]:.2f}")
    print(f"ratio project/reference: {project_s / book_s:.2f}x (target <= 0.40x)")


if __name__ == "__main__":
    main()
