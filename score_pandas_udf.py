"""Entry point `score_pandas_udf`: score a dataset on Spark with a single-node model (scikit-learn or
any python_function model) through pandas UDFs.

    mlflow run . -e score_pandas_udf -P model_uri=runs:/<run_id>/model -P input_path=/data/in.parquet \
        -P output_path=/data/scored.parquet -P method=map_in_pandas -P batch_size=10000

method=map_in_pandas loads the model once per task; method=spark_udf uses mlflow.pyfunc.spark_udf.
The output (the input's columns plus `prediction`) appears at output_path only when complete.
"""

from sparkmlops.core import cli
from sparkmlops.score.score_pandas_udf import SCORE_PANDAS_UDF

main = cli.command(SCORE_PANDAS_UDF)

if __name__ == "__main__":
    cli.run(main)
