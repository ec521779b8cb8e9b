"""Entry point `score_batch`: score a parquet (or CSV) file or folder with a logged or registered Spark model.

    mlflow run . -e score_batch -P model_uri=runs:/<run_id>/model -P input_path=/data/in.parquet \
        -P output_path=/data/scored.parquet

The output (the input's columns plus `prediction`) appears at output_path only when complete.
"""

import click

from sparkmlops.core import cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.score.score_batch import BatchParams, predict_batch


@click.command(name="score_batch")
@cli.model_uri_option
@click.option("--input_path", default="", help="Parquet (or .csv) file or folder to score.")
@click.option("--output_path", default="", help="Parquet folder to write.")
@click.option("--mode", default="error", show_default=True, help="error (refuse an existing output) or overwrite.")
@cli.spark_master_option
def main(**options):
    """Score a dataset in batch."""
    master = options.pop("spark_master")
    params = BatchParams(**options)
    summary = run_entry_point("score_batch", params, master, lambda spark, model: predict_batch(spark, params, model))
    print(
        f"score_batch: {summary['rows_scored']} rows -> {params.output_path} in {summary['seconds']:.1f} s "
        f"({summary['rows_per_second']:.0f} rows/s), model {summary['model']}"
    )


if __name__ == "__main__":
    cli.run(main)
