"""Entry point `tune_hyperopt`: Hyperopt search over the price model, one parent run, a nested run per trial.

    mlflow run . -e tune_hyperopt -P max_evals=32
    mlflow run . -e tune_hyperopt -P engine=sklearn -P parallelism=2

engine=mllib (default): TPE over the Spark ML pipeline of `train`, trials one after another in one
SparkSession. engine=sklearn: scikit-learn trials in parallel on the executors through SparkTrials.
The parent run gets the best parameters and metrics, a `best_run_id` tag and the best model, refit on
the training split and logged as the run's model `model`.
"""

import click

from sparkmlops.core import cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.tune import options as model_options
from sparkmlops.tune.search import TuneParams, summary_line
from sparkmlops.tune.tune_hyperopt import tune_and_log


@click.command(name="tune_hyperopt")
@model_options.search_options
def main(**options):
    """Tune the price model with Hyperopt and log the best one."""
    master = options.pop("spark_master")
    result = run_entry_point("tune_hyperopt", TuneParams(**options), master, tune_and_log)
    print(summary_line("tune_hyperopt", result))


if __name__ == "__main__":
    cli.run(main)
