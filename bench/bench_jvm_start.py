"""Benchmark of the Spark class archive (`make spark-archive`): a fresh process's session start with it
against the same without it, in one run.

Each process imports the session factory, starts a session on local[2] through it (`get_spark`, which maps
the archive) and runs one small job; the baseline is the same process with SPARKMLOPS_CLASS_ARCHIVE=off.
The two alternate (with, without, with, ...) and the ratio is taken pair by pair; the archive is built first
if missing, outside the timings. Prints each arm's median, min and max seconds and the median of the pairs'
ratios with their spread.

    python bench/bench_jvm_start.py [--pairs 10]
"""

import argparse
import os
import statistics
import sys

from common import ROOT, timed

START = "from sparkmlops.core.spark import get_spark; get_spark('jvm-start', 'local[2]').range(1000).count()"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SPARK_REMOTE", None)
    _, built = timed([sys.executable, "-m", "tools.class_archive", "build"], env)
    print(built.stdout.strip())
    with_archive, without = [], []
    for _ in range(args.pairs):
        with_archive.append(timed([sys.executable, "-c", START], env)[0])
        without.append(timed([sys.executable, "-c", START], {**env, "SPARKMLOPS_CLASS_ARCHIVE": "off"})[0])
    ratios = [a / b for a, b in zip(with_archive, without)]
    print(f"{args.pairs} alternating pairs of fresh processes: session start on local[2] and one job")
    print("| arm | median s | min s | max s |")
    print("|---|---|---|---|")
    for label, seconds in (("with the archive", with_archive), ("without (SPARKMLOPS_CLASS_ARCHIVE=off)", without)):
        print(f"| {label} | {statistics.median(seconds):.2f} | {min(seconds):.2f} | {max(seconds):.2f} |")
    spread = f"{min(ratios):.2f} to {max(ratios):.2f}"
    print(f"ratio with/without, pair by pair: median {statistics.median(ratios):.2f} ({spread})")


if __name__ == "__main__":
    main()
