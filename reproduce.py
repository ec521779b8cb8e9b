"""Entry point `reproduce`: re-run a logged run at its git commit with its parameters and data, then compare.

    mlflow run . -e reproduce -P run_id=<id>
    python reproduce.py --run_id <id> --env_manager uv --tolerance 1e-9

Refuses, before anything runs, a run made from a dirty tree or without a commit, code from a source that
is not https, ssh or a local path, or that only the run's tags name and is not trusted (--trusted_sources),
and data whose content digest changed since the run (unless --allow_data_change true). The new run is tagged
``reproduction_of=<id>``; this run logs reproduction/metrics.csv (metric, original, reproduced,
difference) and ends FAILED, exit code 4, when a metric differs by more than the tolerance.
"""

import click

from sparkmlops.core import choices, cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.reproduce.reproduce import (
    ENV_MANAGERS,
    ReproduceParams,
    reproduce_and_log,
)


@click.command(name="reproduce")
@click.option("--run_id", default="", help="The run to reproduce.")
@click.option(
    "--env_manager",
    default="local",
    show_default=True,
    help="Where the re-run runs: " + choices.describe(ENV_MANAGERS) + ".",
)
@click.option(
    "--tolerance",
    type=float,
    default=0.0,
    show_default=True,
    help="Largest allowed |reproduced - original| per metric; 0 = bit-identical.",
)
@click.option(
    "--allow_data_change",
    type=bool,
    default=False,
    show_default=True,
    help="Re-run even when the data no longer has the run's digest (the changes are reported).",
)
@click.option(
    "--project_uri",
    default="",
    help="Git URL or clone holding the run's commit; empty = this "
    "checkout, else the repository URL MLflow recorded for the run.",
)
@click.option(
    "--trusted_sources",
    default="",
    help="Where the code may be fetched from when the run's tags name "
    "the repository: comma-separated URL prefixes (https, ssh or local paths), or 'any'; empty = only "
    "this checkout and its git remotes. project_uri is always allowed.",
)
@cli.spark_master_option
def main(**options):
    """Reproduce a logged run and compare its metrics."""
    master = options.pop("spark_master")
    params = ReproduceParams(**options)
    result = run_entry_point(
        "reproduce", params, master, lambda spark, original: reproduce_and_log(spark, params, original)
    )
    print(f"reproduce: {result.verdict} (run {result.reproduced_run_id})")


if __name__ == "__main__":
    cli.run(main)
