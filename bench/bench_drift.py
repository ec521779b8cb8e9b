"""Benchmark of the drift check (sparkmlops.monitor.drift_statistics.feature_drift) against a baseline measured in
the same run.

Data: generate_airbnb's reference (seed 42) and current data (seed 7, without and with drift=True), N rows
each, written as parquet into a temporary folder first (not timed) and read back with read_dataset as
check_drift does. Baseline: one plain scan of the reference and the current data touching every checked
column (row count, the sum of each numeric column as double, the total length of each string column): the
least any drift check pays. Measured: feature_drift over every column, as check_drift calls it without a
model (infer_feature_spec's numeric columns plus the label price, and the string columns), wall time and
its ratio to the baseline, at --rows and at --small-rows, so the time per row shows how it scales. The no-drift
pair is checked at the small
size only (unless --large-no-drift): generating 10M rows takes ~8 min on 2 cores.

Also shown: the Spark jobs of the check and the parquet rows they read (passes over each dataset), what
reaches Python (rows collected from the groupBy results, quantiles from the percentile_approx row), the peak RSS of this
driver Python process and the resident and peak RSS of the driver JVM (local mode: the executors' work runs
in it too) before and after the checks (the session has a modest driver memory: nothing big may reach the
driver), and the largest PSI without and with drift. Spark runs where the environment says
(the factory's default: local[*]).

    python bench/bench_drift.py [--rows 10000000] [--small-rows 1000000] [--repeats 1] [--driver-memory 4g]
"""

import argparse
import contextlib
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, java_rss_mb

sys.path.insert(0, str(ROOT))

from sparkmlops.core import compat  # noqa: E402
from sparkmlops.core.spark import get_spark, spark_master  # noqa: E402
from sparkmlops.data import generators, validation  # noqa: E402
from sparkmlops.data import schema as data_schema  # noqa: E402
from sparkmlops.monitor.drift_statistics import feature_drift  # noqa: E402

REFERENCE_SEED, CURRENT_SEED = 42, 7
THRESHOLD = 0.2  # check_drift's default
WARMUP_ROWS = 10_000


def peak_rss_mb() -> float:
    """Peak resident set size of this Python process (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def us_per_row(seconds: float, rows: int) -> float:
    """Microseconds per input row, the reference's and the current data's rows together."""
    return seconds / (2 * rows) * 1e6


def folder_mb(path: str) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*.parquet")) / 1e6


class Probe:
    """Counts what one call of the drift check brings to Python and which Spark jobs it runs.

    DataFrame.collect is wrapped for the duration (the only way drift_statistics gets data back; a row's
    arrays count as their numbers); every Spark job started inside runs under one job group, whose stages'
    input records (parquet rows read) come from the JVM's status store afterwards.
    """

    _seq = 0

    def __init__(self, spark, frame_type):
        Probe._seq += 1
        self.spark, self.frame_type = spark, frame_type
        self.group = f"bench-drift-{Probe._seq}"
        self.calls = []  # [caller, seconds, values returned, job ids]
        self.jobs, self.input_rows = [], 0

    def _wrap(self, name, count):
        original = getattr(self.frame_type, name)
        tracker = self.spark.sparkContext.statusTracker()

        def wrapper(frame, *args, **kwargs):
            before = set(tracker.getJobIdsForGroup(self.group))
            started = time.perf_counter()
            result = original(frame, *args, **kwargs)
            seconds = time.perf_counter() - started
            jobs = sorted(set(tracker.getJobIdsForGroup(self.group)) - before)
            self.calls.append([f"{sys._getframe(1).f_code.co_name}: {name}", seconds, count(result), jobs])
            return result

        return original, wrapper

    @contextlib.contextmanager
    def active(self):
        wrapped = {name: self._wrap(name, count) for name, count in [("collect", values_in)]}
        self.spark.sparkContext.setJobGroup(self.group, "bench_drift")
        for name, (_, wrapper) in wrapped.items():
            setattr(self.frame_type, name, wrapper)
        try:
            yield self
        finally:
            for name, (original, _) in wrapped.items():
                setattr(self.frame_type, name, original)
            self.spark.sparkContext.setJobGroup("bench-drift-idle", "bench_drift")
        self._read_job_stats()

    def _read_job_stats(self):
        sc = self.spark.sparkContext
        jvm_sc = compat.jvm_spark_context(sc)
        jvm_sc.listenerBus().waitUntilEmpty()  # the status store is fed asynchronously
        store, tracker = jvm_sc.statusStore(), sc.statusTracker()
        self.jobs = sorted(tracker.getJobIdsForGroup(self.group))
        rows_by_job = {}
        for job in self.jobs:
            info = tracker.getJobInfo(job)
            rows_by_job[job] = sum(store.lastStageAttempt(stage).inputRecords() for stage in info.stageIds)
        self.input_rows = sum(rows_by_job.values())
        for call in self.calls:
            call.append(sum(rows_by_job.get(job, 0) for job in call[3]))

    @property
    def values_collected(self) -> int:
        return sum(call[2] for call in self.calls)


def values_in(rows) -> int:
    """Rows collected, with a row of arrays (the quantiles) counted as the numbers it holds."""
    return sum(sum(len(v) for v in row if isinstance(v, list)) or 1 for row in rows)


def baseline_scan(frames, numeric_cols, categorical_cols):
    """One plain pass per dataset over every checked column, one result row back."""
    from pyspark.sql import functions as F

    for df in frames:
        df.agg(
            F.count(F.lit(1)),
            *[F.sum(F.col(c).cast("double")) for c in numeric_cols],
            *[F.sum(F.length(c)) for c in categorical_cols],
        ).collect()


def measure_pair(spark, reference, current, numeric_cols, categorical_cols, repeats):
    """(baseline seconds, drift seconds, results, Probe of the last drift run): medians of ``repeats``
    alternating runs."""

    baseline, checks, results, probe = [], [], None, None
    for _ in range(repeats):
        started = time.perf_counter()
        baseline_scan([reference, current], numeric_cols, categorical_cols)
        baseline.append(time.perf_counter() - started)
        probe = Probe(spark, type(reference))
        with probe.active():
            started = time.perf_counter()
            results = feature_drift(reference, current, numeric_cols, categorical_cols)
            checks.append(time.perf_counter() - started)
    return statistics.median(baseline), statistics.median(checks), results, probe


def write_datasets(spark, tmp: Path, rows: int, plain_current: bool = True) -> dict:
    """{name: parquet path} of the reference, (current) and drifted current data, ``rows`` rows each."""

    paths = {}
    datasets = [
        ("reference", REFERENCE_SEED, False),
        ("current", CURRENT_SEED, False),
        ("current, drift=True", CURRENT_SEED, True),
    ]
    for name, seed, drift in datasets if plain_current else [datasets[0], datasets[2]]:
        path = str(tmp / f"{name.split(',')[0]}{'-drift' if drift else ''}-{rows}.parquet")
        generators.generate_airbnb(spark, rows, seed, drift=drift).write.parquet(path)
        paths[name] = path
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows per dataset at the large size")
    parser.add_argument(
        "--small-rows",
        type=int,
        default=0,
        help="rows per dataset at the small size (default: a tenth of --rows; equal to --rows: one size only)",
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument(
        "--large-no-drift",
        action="store_true",
        help="also check a no-drift pair at the large "
        "size (default: only the drifted pair there; generating 10M rows takes ~8 min on 2 cores)",
    )
    args = parser.parse_args()
    sizes = sorted({args.small_rows or max(args.rows // 10, 1), args.rows})

    # No master here: the environment's (PYSPARK_SUBMIT_ARGS, spark-defaults.conf), else local[*].
    spark = get_spark(
        "bench-drift",
        conf={
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.memory": args.driver_memory,
        },
    )
    master, cores = spark_master(spark), spark.sparkContext.defaultParallelism
    # The groupBy results are tiny: a few shuffle partitions per core, not the default 200.
    spark.conf.set("spark.sql.shuffle.partitions", str(cores * 2))

    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        tmp = Path(tmp)
        data, generation_s = {}, 0.0
        for rows in sorted({WARMUP_ROWS, *sizes}):
            started = time.perf_counter()
            data[rows] = write_datasets(spark, tmp, rows, rows != sizes[-1] or args.large_no_drift or len(sizes) == 1)
            generation_s += time.perf_counter() - started
            print(
                f"generated {len(data[rows])} x {rows:,} rows in {time.perf_counter() - started:.0f} s (not timed)",
                flush=True,
            )
        columns = data_schema.infer_feature_spec(validation.read_dataset(spark, data[sizes[0]]["reference"]), "price")
        numeric_cols, categorical_cols = columns.numeric_cols + ["price"], columns.categorical_cols

        # Warm-up (JIT, code generation, Python imports), outside the timings.
        warm = {name: validation.read_dataset(spark, path) for name, path in data[WARMUP_ROWS].items()}
        measure_pair(spark, warm["reference"], warm["current"], numeric_cols, categorical_cols, 1)

        rss_start, jvm_start = peak_rss_mb(), java_rss_mb()
        if not jvm_start[0]:
            sys.exit("bench_drift: no driver JVM among this process's children (run it with python, not spark-submit)")
        rows_out = []
        for rows in sizes:
            frames = {name: validation.read_dataset(spark, path) for name, path in data[rows].items()}
            for name in [n for n in ("current", "current, drift=True") if n in data[rows]]:
                print(f"{rows:,} rows, {name} ...", flush=True)
                base_s, drift_s, results, probe = measure_pair(
                    spark, frames["reference"], frames[name], numeric_cols, categorical_cols, args.repeats
                )
                top = max(results, key=lambda r: r.psi)
                rows_out.append(
                    {
                        "rows": rows,
                        "current": name,
                        "base_s": base_s,
                        "drift_s": drift_s,
                        "probe": probe,
                        "mb": folder_mb(data[rows]["reference"]) + folder_mb(data[rows][name]),
                        "max_psi": top.psi,
                        "top": top.feature,
                        "drifted": [r.feature for r in results if r.psi >= THRESHOLD],
                        "buckets": sum(r.buckets for r in results),
                        "rss": peak_rss_mb(),
                        "jvm": java_rss_mb(),
                    }
                )
        spark.stop()

    features = len(numeric_cols) + len(categorical_cols)
    print(
        f"\nDrift check: feature_drift over {len(numeric_cols)} numeric columns (incl. price) and "
        f"{len(categorical_cols)} string columns, reference seed {REFERENCE_SEED} vs current seed {CURRENT_SEED}; "
        f"{master} ({cores} cores), driver memory {args.driver_memory}, {cores * 2} shuffle partitions, "
        f"median of {args.repeats}; data generation {generation_s:.0f} s (not timed)"
    )
    print(
        "| rows per dataset | current data | parquet MB (both) | baseline scan s | feature_drift s | vs baseline "
        "| drift us/row | Spark jobs | parquet passes per dataset | values to Python | Python peak RSS MB "
        "| JVM RSS MB (peak) | max PSI (feature) | PSI >= 0.2 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows_out:
        probe, drifted = r["probe"], f" ({', '.join(r['drifted'])})" if r["drifted"] else ""
        print(
            f"| {r['rows']:,} | {r['current']} | {r['mb']:.0f} | {r['base_s']:.1f} | {r['drift_s']:.1f} | "
            f"{r['drift_s'] / r['base_s']:.2f}x | {us_per_row(r['drift_s'], r['rows']):.2f} | {len(probe.jobs)} | "
            f"{probe.input_rows / (2 * r['rows']):.1f} | {probe.values_collected:,} | {r['rss']:.0f} | "
            f"{r['jvm'][0]:.0f} ({r['jvm'][1]:.0f}) | {r['max_psi']:.3f} ({r['top']}) | "
            f"{len(r['drifted'])} of {features}{drifted} |"
        )

    drifted_pairs = [r for r in rows_out if r["current"] == "current, drift=True"]
    small, large = drifted_pairs[0], drifted_pairs[-1]  # at both sizes
    if small["rows"] != large["rows"]:
        print(
            f"\nScaling {small['rows']:,} -> {large['rows']:,} rows per dataset (drifted pair), per input row "
            f"(reference + current): feature_drift {us_per_row(small['drift_s'], small['rows']):.2f} -> "
            f"{us_per_row(large['drift_s'], large['rows']):.2f} us, baseline scan "
            f"{us_per_row(small['base_s'], small['rows']):.2f} -> {us_per_row(large['base_s'], large['rows']):.2f} us; "
            f"feature_drift time x{large['drift_s'] / small['drift_s']:.1f} for x{large['rows'] / small['rows']:.0f} "
            "rows"
        )
    returned = ", ".join(f"{r['probe'].values_collected:,}" for r in rows_out)
    print(
        f"Python peak RSS: {rss_start:.0f} MB before the checks, {rows_out[-1]['rss']:.0f} MB after all of them "
        f"(+{rows_out[-1]['rss'] - rss_start:.0f} MB); the driver JVM (heap at most {args.driver_memory}): "
        f"{jvm_start[0]:.0f} MB resident before the checks, peak {rows_out[-1]['jvm'][1]:.0f} MB. "
        "Values returned to Python per check (groupBy rows + "
        f"quantiles): {returned}, whatever the row count; {large['buckets']} PSI buckets over {features} features"
    )

    calls = large["probe"].calls
    print(
        f"\nfeature_drift, {large['rows']:,} rows per dataset, drifted pair, call by call "
        "(reference first, then current):"
    )
    print("| drift.py function: DataFrame call | s | share | Spark jobs | parquet rows read | values returned |")
    print("|---|---|---|---|---|---|")
    for caller, seconds, values, jobs, input_rows in calls:
        print(
            f"| {caller} | {seconds:.1f} | {seconds / large['drift_s']:.0%} | {len(jobs)} | {input_rows:,} | "
            f"{values:,} |"
        )
    rest = large["drift_s"] - sum(call[1] for call in calls)
    print(f"| (between the calls: plans, Bucketizer, Python) | {rest:.1f} | {rest / large['drift_s']:.0%} | | | |")


if __name__ == "__main__":
    main()
