"""Entry point `tune_hyperopt`: Hyperopt search over the price model, one parent run, a nested run per trial.

    mlflow run . -e tune_hyperopt -P max_evals=32
    mlflow run . -e tune_hyperopt -P engine=sklearn -P parallelism=2

engine=mllib (default): TPE over the Spark ML pipeline of `train`, trials one after another in one
SparkSession. engine=sklearn: scikit-learn trials in parallel on the executors through SparkTrials.
The parent run gets the best parameters and metrics, a `best_run_id` tag and the best model, refit on
the training split and logged under `model`.
"""

import click

from sparkmlops.core import choices, cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.models import options as model_options
from sparkmlops.models.search import summary_line
from sparkmlops.tune.tune_hyperopt import ENGINES, TuneParams, tune_and_log


@click.command(name="tune_hyperopt")
@cli.data_path_option
@cli.label_col_option
@click.option("--max_evals", type=int, default=16, show_default=True, help="Number of trials.")
@click.option("--parallelism", type=int, default=1, show_default=True,
              help="Concurrent trials (engine=sklearn; Spark task slots are the real limit).")
@click.option("--engine", default="mllib", show_default=True, help=choices.describe(ENGINES)+".")
@model_options.metric_option
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the splits, the models and TPE.")
@click.option("--timeout_seconds", type=int, default=0, show_default=True,
              help="Stop starting trials after this many seconds; 0 = no limit.")
@cli.train_fraction_option
@cli.register_as_option
@cli.spark_master_option
def main(**options):
    """Tune the price model with Hyperopt and log the best one."""
    master = options.pop("spark_master")
    result = run_entry_point("tune_hyperopt", TuneParams(**options), master, tune_and_log)
    print(summary_line("tune_hyperopt", result))


if __name__ == "__main__":
    cli.run(main)
