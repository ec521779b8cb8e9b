"""Entry points `main` and `train`: fit the book's random-forest price pipeline and log it to MLflow.

    mlflow run . -P num_trees=200 -P max_depth=8
    python train.py --data_path /data/sf-airbnb-clean.parquet

With no data_path, the embedded generated SF Airbnb dataset is used (created on first use).
"""

import click

from sparkmlops.core import choices, cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.fitting.spark_pipeline import MODEL_TYPES, TrainParams
from sparkmlops.train.train import train_and_log


@click.command(name="train")
@cli.data_path_option
@cli.label_col_option
@click.option("--model_type", default="rf", show_default=True, help=choices.describe(MODEL_TYPES) + ".")
@click.option(
    "--num_trees", type=int, default=100, show_default=True, help="Trees, or boosting rounds for gbt and xgboost."
)
@click.option("--max_depth", type=int, default=5, show_default=True, help="0 to 30.")
@click.option("--max_bins", type=int, default=40, show_default=True, help=">= categories of any string column + 1.")
@click.option(
    "--min_instances_per_node", type=int, default=1, show_default=True, help="Fewest training rows in a leaf."
)
@click.option(
    "--feature_subset_strategy",
    default="auto",
    show_default=True,
    help="auto, all, onethird, sqrt, log2, a fraction such as 0.5, or a number of features.",
)
@click.option(
    "--log_label",
    type=bool,
    default=False,
    show_default=True,
    help="Fit log1p(label); the model still predicts the label (expm1 inside the pipeline).",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the split and the forest.")
@cli.train_fraction_option
@cli.register_as_option
@cli.spark_master_option
def main(**options):
    """Train and log the random-forest price model."""
    master = options.pop("spark_master")
    result = run_entry_point("train", TrainParams(**options), master, train_and_log)
    print(
        f"train: rmse={result.metrics['rmse']:.2f} r2={result.metrics['r2']:.3f} "
        f"mae={result.metrics['mae']:.2f} run_id={result.run_id}"
    )


if __name__ == "__main__":
    cli.run(main)
