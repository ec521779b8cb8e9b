"""Entry point `train_per_group`: one scikit-learn model per group (default: per neighbourhood), trained on
the executors with groupBy().applyInPandas(), each logged as a nested run tagged with its group.

    mlflow run . -e train_per_group -P group_col=neighbourhood_cleansed -P min_rows=50
    mlflow run . -e train_per_group -P data_path=/tmp/iot.parquet -P label_col=power -P group_col=device_id

The parent run logs group_models.csv (group, rows, run id, rmse, ...), the skipped groups, a fallback
model for rows of groups without a model, and the per-group models' metrics on the test split.
"""

import click

from sparkmlops.core import cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.train.train_per_group import PerGroupParams, train_per_group_and_log
from sparkmlops.tune import options as model_options


@click.command(name="train_per_group")
@cli.data_path_option
@cli.label_col_option
@click.option(
    "--group_col", default="neighbourhood_cleansed", show_default=True, help="String column: one model per value."
)
@click.option(
    "--min_rows",
    type=int,
    default=50,
    show_default=True,
    help="Groups with fewer training rows are skipped (listed; the fallback model scores them).",
)
@model_options.sklearn_model_options
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the split and the models.")
@cli.train_fraction_option
@cli.spark_master_option
def main(**options):
    """Train one model per group and a fallback model."""
    master = options.pop("spark_master")
    result = run_entry_point("train_per_group", PerGroupParams(**options), master, train_per_group_and_log)
    trained = int((result.table["status"] == "trained").sum())
    print(
        f"train_per_group: {trained} group models, {len(result.table) - trained} skipped; test rmse="
        f"{result.metrics['rmse']:.2f} r2={result.metrics['r2']:.3f} (fallback alone: rmse="
        f"{result.fallback_metrics['rmse']:.2f} r2={result.fallback_metrics['r2']:.3f}) run_id={result.run_id}"
    )


if __name__ == "__main__":
    cli.run(main)
