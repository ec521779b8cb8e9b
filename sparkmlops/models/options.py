"""The click options of model parameters several entry points share (same names, defaults and help),
with help texts built from the models' own choice tables."""

from __future__ import annotations

import click

from sparkmlops.core import choices
from sparkmlops.models.metrics import METRICS
from sparkmlops.models.sklearn_forest import MODEL_TYPES as SKLEARN_MODEL_TYPES

metric_option = click.option(
    "--metric", default="rmse", show_default=True, help=choices.describe(METRICS) + ": what the search optimises.")


def sklearn_model_options(command):
    """The scikit-learn model's options (train_sklearn, train_per_group): same names, defaults and help."""
    options = [
        click.option("--model_type", default="rf", show_default=True, help=choices.describe(SKLEARN_MODEL_TYPES) + "."),
        click.option("--num_trees", type=int, default=100, show_default=True,
                     help="Trees (rf) or boosting iterations (gbt)."),
        click.option("--max_depth", type=int, default=10, show_default=True, help="0 = unlimited."),
        click.option("--min_samples_leaf", type=int, default=1, show_default=True, help="Fewest training rows in a leaf."),
        click.option("--max_features", default="1.0", show_default=True,
                     help="Share of features per split in (0, 1]; rf also takes sqrt or log2."),
    ]
    for option in reversed(options):
        command = option(command)
    return command
