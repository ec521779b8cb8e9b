"""The I/O floor for bench_score.py: read the rows and write them back with a constant column."""

import sys
import time

from pyspark.sql import functions as F

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from sparkmlops.core.spark import get_spark  # noqa: E402

started = time.perf_counter()
spark = get_spark("io-floor")
spark.read.parquet(sys.argv[1]).withColumn("prediction", F.lit(0.0)).write.parquet(sys.argv[2])
print(f"floor: {time.perf_counter() - started:.1f} s")
