"""Entry point `generate_data`: write a synthetic SF Airbnb dataset with the real data's exact schema,
or (dataset=iot) device sensor readings for the book's per-device models (label power, group device_id).

    mlflow run . -e generate_data -P output_path=/tmp/airbnb.parquet -P n_rows=10000000 -P n_files=100
    mlflow run . -e generate_data -P dataset=iot -P output_path=/tmp/iot.parquet -P n_rows=100000

Deterministic in `seed`: the same seed gives the same rows, whatever n_files or the cluster.
"""

import click

from sparkmlops.core import choices, cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.data.generate_data import DATASETS, GenerateParams, generate_and_write


@click.command(name="generate_data")
@click.option("--output_path", default="", help="Parquet folder to create (must not exist unless mode=overwrite).")
@click.option("--n_rows", type=int, default=7146, show_default=True, help="Rows (7146 = the real data's size).")
@click.option("--n_files", type=int, default=1, show_default=True, help="Number of parquet part files.")
@click.option("--seed", type=int, default=42, show_default=True, help="Same seed, same rows, whatever n_files.")
@click.option("--mode", default="error", show_default=True, help="error (refuse an existing output) or overwrite.")
@click.option("--dataset", default="airbnb", show_default=True, help=choices.describe(DATASETS) + ".")
@click.option("--n_devices", type=int, default=36, show_default=True, help="Number of devices (dataset=iot only).")
@click.option(
    "--drift",
    type=bool,
    default=False,
    show_default=True,
    help="The drifted variant (airbnb only): prices up 50%, new neighbourhoods, more missing reviews.",
)
@cli.spark_master_option
def main(**options):
    """Generate the synthetic dataset."""
    master = options.pop("spark_master")
    params = GenerateParams(**options)
    summary = run_entry_point("generate_data", params, master, generate_and_write)
    print(
        f"generate_data: wrote {summary['rows']} rows in {summary['files']} files to {params.output_path} "
        f"({summary['seconds']:.1f} s)"
    )


if __name__ == "__main__":
    cli.run(main)
