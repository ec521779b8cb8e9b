"""The click options of model parameters several entry points share (same names, defaults and help),
with help texts built from the models' own choice tables."""

from __future__ import annotations

import click

from sparkmlops.core import choices, cli
from sparkmlops.fitting.metrics import METRICS
from sparkmlops.fitting.sklearn_forest import MODEL_TYPES as SKLEARN_MODEL_TYPES
from sparkmlops.tune.search import ENGINES, SEARCH_SPACES

metric_option = click.option(
    "--metric", default="rmse", show_default=True, help=choices.describe(METRICS) + ": what the search optimises."
)


def sklearn_model_options(command):
    """The scikit-learn model's options (train_sklearn, train_per_group): same names, defaults and help."""
    options = [
        click.option("--model_type", default="rf", show_default=True, help=choices.describe(SKLEARN_MODEL_TYPES) + "."),
        click.option(
            "--num_trees", type=int, default=100, show_default=True, help="Trees (rf) or boosting iterations (gbt)."
        ),
        click.option("--max_depth", type=int, default=10, show_default=True, help="0 = unlimited."),
        click.option(
            "--min_samples_leaf", type=int, default=1, show_default=True, help="Fewest training rows in a leaf."
        ),
        click.option(
            "--max_features",
            default="1.0",
            show_default=True,
            help="Share of features per split in (0, 1]; rf also takes sqrt or log2.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def search_options(command):
    """The options of the sequential tuners (tune_hyperopt, tune_optuna): same names, defaults and help."""
    options = [
        cli.data_path_option,
        cli.label_col_option,
        click.option("--max_evals", type=int, default=16, show_default=True, help="Number of trials."),
        click.option(
            "--parallelism",
            type=int,
            default=1,
            show_default=True,
            help="Concurrent trials (engine=sklearn; Spark task slots are the real limit).",
        ),
        click.option("--engine", default="mllib", show_default=True, help=choices.describe(ENGINES) + "."),
        metric_option,
        click.option(
            "--seed", type=int, default=42, show_default=True, help="Seed of the splits, the models and the sampler."
        ),
        click.option(
            "--timeout_seconds",
            type=int,
            default=0,
            show_default=True,
            help="Stop starting trials after this many seconds; 0 = no limit.",
        ),
        click.option(
            "--early_stop_trials",
            type=int,
            default=0,
            show_default=True,
            help="Stop when this many trials in a row have not improved the best loss; 0 = run all.",
        ),
        click.option(
            "--search_space", default="default", show_default=True, help=choices.describe(SEARCH_SPACES) + "."
        ),
        cli.train_fraction_option,
        cli.register_as_option,
        cli.spark_master_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command
