"""Entry point `pipeline`: the chain in one command, each step a nested run, unchanged steps reused.

    mlflow run . -e pipeline -P register_as=sf_price
    python pipeline.py --data_path /data/sf-airbnb-clean.parquet --register_as sf_price --min_r2 0.3

A second run with nothing changed reuses every step and starts no JVM; -P rerun=train forces train and
every step after it.
"""

from sparkmlops.core import cli
from sparkmlops.pipeline.pipeline import PIPELINE

main = cli.command(PIPELINE)

if __name__ == "__main__":
    cli.run(main)
