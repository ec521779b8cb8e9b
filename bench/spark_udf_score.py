"""Score with mlflow.pyfunc.spark_udf of the same Spark model (for bench_score.py)."""

import sys
import time

import mlflow.pyfunc
from pyspark.sql import functions as F

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from sparkmlops.core.spark import get_spark  # noqa: E402

model_uri, input_path, output_path, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
spark = get_spark("spark-udf")
df = spark.read.parquet(input_path).limit(limit)
started = time.perf_counter()
predict = mlflow.pyfunc.spark_udf(spark, model_uri, env_manager="local", result_type="double")
features = [c for c in df.columns if c != "price"]
df.withColumn("prediction", predict(F.struct(*[F.col(c) for c in features]))).write.parquet(output_path)
print(f"spark_udf: {limit} rows in {time.perf_counter() - started:.1f} s")
