"""Entry point `score_pandas_udf`: score a dataset on Spark with a single-node model (scikit-learn or
any python_function model) through pandas UDFs.

    mlflow run . -e score_pandas_udf -P model_uri=runs:/<run_id>/model -P input_path=/data/in.parquet \
        -P output_path=/data/scored.parquet -P method=map_in_pandas -P batch_size=10000

method=map_in_pandas loads the model once per task; method=spark_udf uses mlflow.pyfunc.spark_udf.
The output (the input's columns plus `prediction`) appears at output_path only when complete.
"""

import click

from sparkmlops.core import choices, cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.score.score_pandas_udf import (
    METHODS,
    PandasUdfParams,
    score_with_pandas_udf,
)


@click.command(name="score_pandas_udf")
@cli.model_uri_option
@click.option("--input_path", default="", help="Parquet (or .csv) file or folder to score.")
@click.option("--output_path", default="", help="Parquet folder to write.")
@click.option("--method", default="map_in_pandas", show_default=True, help=choices.describe(METHODS) + ".")
@click.option("--batch_size", type=int, default=10000, show_default=True, help="Rows per Arrow batch.")
@click.option("--mode", default="error", show_default=True, help="error (refuse an existing output) or overwrite.")
@cli.spark_master_option
def main(**options):
    """Score a dataset with a pyfunc model in pandas UDFs."""
    master = options.pop("spark_master")
    params = PandasUdfParams(**options)
    summary = run_entry_point(
        "score_pandas_udf", params, master, lambda spark, model: score_with_pandas_udf(spark, params, model)
    )
    print(
        f"score_pandas_udf: {summary['rows_scored']} rows -> {params.output_path} in {summary['seconds']:.1f} s "
        f"({summary['rows_per_second']:.0f} rows/s, {params.method}), model {summary['model']}"
    )


if __name__ == "__main__":
    cli.run(main)
