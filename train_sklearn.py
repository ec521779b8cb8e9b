"""Entry point `train_sklearn`: a scikit-learn pipeline (string encoding + random forest or gradient
boosting) on the same data, split and metrics as `train`, logged for score_pandas_udf and serving.

    mlflow run . -e train_sklearn -P model_type=gbt -P num_trees=200
    python train_sklearn.py --data_path /data/sf-airbnb-clean.parquet
"""

import click

from sparkmlops.core import cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.train.train_sklearn import SklearnTrainParams, train_sklearn_and_log
from sparkmlops.tune import options as model_options


@click.command(name="train_sklearn")
@cli.data_path_option
@cli.label_col_option
@model_options.sklearn_model_options
@click.option(
    "--log_label",
    type=bool,
    default=False,
    show_default=True,
    help="Fit log1p(label); the model still predicts the label.",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the split and the model.")
@cli.train_fraction_option
@cli.register_as_option
@cli.spark_master_option
def main(**options):
    """Train and log the scikit-learn price model."""
    master = options.pop("spark_master")
    result = run_entry_point("train_sklearn", SklearnTrainParams(**options), master, train_sklearn_and_log)
    print(
        f"train_sklearn: rmse={result.metrics['rmse']:.2f} r2={result.metrics['r2']:.3f} "
        f"mae={result.metrics['mae']:.2f} run_id={result.run_id} model={result.model_uri}"
    )


if __name__ == "__main__":
    cli.run(main)
