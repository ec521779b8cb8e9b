"""Entry point `tune_grid`: scikit-learn GridSearchCV over a random forest, distributed with joblibspark.

    mlflow run . -e tune_grid -P parallelism=2
    mlflow run . -e tune_grid -P param_grid='{"num_trees": [50, 100], "max_depth": [8, 0]}'

Each candidate is a nested run with its cross-validated metric; the parent run gets cv_results.csv, the
best parameters, a `best_run_id` tag, the test metrics and the best model under `model`.
"""

import click

from sparkmlops.core import cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.tune import options as model_options
from sparkmlops.tune.search import summary_line
from sparkmlops.tune.tune_grid import GridParams, grid_search_and_log


@click.command(name="tune_grid")
@cli.data_path_option
@cli.label_col_option
@click.option(
    "--param_grid",
    default="",
    help="JSON object of lists over num_trees, max_depth (0 = unlimited), min_samples_leaf, "
    "max_features, log_label; empty = the built-in 16-candidate grid.",
)
@click.option("--cv", type=int, default=3, show_default=True, help="Number of folds.")
@click.option("--parallelism", type=int, default=2, show_default=True, help="Concurrent fits (Spark tasks).")
@model_options.metric_option
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the split, folds and forests.")
@cli.train_fraction_option
@cli.spark_master_option
def main(**options):
    """Grid-search the scikit-learn forest on Spark and log the best one."""
    master = options.pop("spark_master")
    result = run_entry_point("tune_grid", GridParams(**options), master, grid_search_and_log)
    print(summary_line("tune_grid", result))


if __name__ == "__main__":
    cli.run(main)
