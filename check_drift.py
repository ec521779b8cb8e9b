"""Entry point `check_drift`: does the current data drift from the reference (a model's training data)?

    python check_drift.py --model_uri models:/price@champion --current_path /data/this-week.parquet \
        || mlflow run . -e train -P data_path=/data/this-week.parquet

Exit code 0 = no drift, 3 = drift found (the run is FINISHED either way), 2 = bad input, 1 = failure.
"""

import click

from sparkmlops.core import cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.monitor.check_drift import DriftParams, check_drift


@click.command(name="check_drift")
@click.option(
    "--model_uri",
    default="",
    help="A model whose training data is the reference (and whose predictions are compared); or give --reference_path.",
)
@click.option("--reference_path", default="", help="Reference data (parquet or CSV).")
@click.option("--current_path", default="", help="The data to check.")
@click.option(
    "--threshold", type=float, default=0.2, show_default=True, help="PSI at or above which a feature drifted."
)
@click.option("--bins", type=int, default=10, show_default=True, help="Quantile bins of numeric features.")
@cli.spark_master_option
def main(**options):
    """Check the current data for drift against the reference."""
    master = options.pop("spark_master")
    params = DriftParams(**options)
    summary = run_entry_point("check_drift", params, master, lambda spark, checked: check_drift(spark, params, checked))
    print(f"check_drift: {summary['verdict']}")


if __name__ == "__main__":
    cli.run(main)
