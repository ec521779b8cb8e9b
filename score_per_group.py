"""Entry point `score_per_group`: score each group's rows with its own model from a train_per_group run.

    mlflow run . -e score_per_group -P run_id=<train_per_group run> -P input_path=/data/in.parquet \
        -P output_path=/data/scored.parquet -P unknown_groups=fallback

Rows of groups without a model are scored by the run's fallback model (fallback), left without a
prediction (null), or refused (error). The output is the input's columns plus `prediction` and
`scored_with` (group, fallback or null), written atomically.
"""

import click

from sparkmlops.core import choices, cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.score.score_per_group import (
    UNKNOWN_GROUPS,
    ScorePerGroupParams,
    score_per_group,
)


@click.command(name="score_per_group")
@click.option("--run_id", default="", help="The parent run of a train_per_group run.")
@click.option("--input_path", default="", help="Parquet (or .csv) file or folder to score.")
@click.option("--output_path", default="", help="Parquet folder to write.")
@click.option(
    "--unknown_groups",
    default="fallback",
    show_default=True,
    help="Rows of a group without a model: " + choices.describe(UNKNOWN_GROUPS) + ".",
)
@click.option("--mode", default="error", show_default=True, help="error (refuse an existing output) or overwrite.")
@cli.spark_master_option
def main(**options):
    """Score with one model per group."""
    master = options.pop("spark_master")
    params = ScorePerGroupParams(**options)
    summary = run_entry_point(
        "score_per_group", params, master, lambda spark, checked: score_per_group(spark, params, checked)
    )
    print(
        f"score_per_group: {summary['rows_scored']} rows -> {params.output_path} in {summary['seconds']:.1f} s; "
        f"{summary['unknown_groups']} groups without a model ({summary['rows_unknown_group']} rows, "
        f"{params.unknown_groups})"
    )


if __name__ == "__main__":
    cli.run(main)
