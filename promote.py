"""Entry point `promote`: the validation gate of the model registry, with aliases instead of stages.

    mlflow run . -e promote -P model_name=sf_price                      # newest version vs @champion
    mlflow run . -e promote -P model_name=sf_price -P min_improvement=0.02
    mlflow run . -e promote -P model_name=sf_price -P version=3 -P force=true   # rollback to v3

The candidate and the current @champion are scored on the same held-out rows; the candidate becomes
@challenger, and @champion moves to it only if it is strictly better by at least min_improvement (or if
there is no champion). The decision and both results are printed, logged in this run and tagged on the
version. A rejection is a normal outcome (exit 0); bad input exits 2 and changes no alias.
"""

import click

from sparkmlops.core import choices, cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.registry.promote import METRICS, PromoteParams, promote_and_log


@click.command(name="promote")
@click.option("--model_name", default="", help="Registered model name.")
@click.option("--version", default="", help="Candidate: a version number or an alias; empty = the newest version.")
@cli.data_path_option
@click.option("--metric", default="rmse", show_default=True, help=choices.describe(METRICS) + ", on the held-out rows.")
@click.option(
    "--min_improvement",
    type=float,
    default=0.0,
    show_default=True,
    help="Relative gain over @champion needed to promote, in [0, 1).",
)
@click.option(
    "--force",
    type=bool,
    default=False,
    show_default=True,
    help="Make --version @champion without evaluating (rollback).",
)
@cli.spark_master_option
def main(**options):
    """Gate a registered model version into @champion."""
    master = options.pop("spark_master")
    run_entry_point(
        "promote", PromoteParams(**options), master, promote_and_log, needs_spark=lambda plan: plan.needs_evaluation
    )


if __name__ == "__main__":
    cli.run(main)
