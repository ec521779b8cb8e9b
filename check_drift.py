"""Entry point `check_drift`: does the current data drift from the reference (a model's training data)?

    python check_drift.py --model_uri models:/price@champion --current_path /data/this-week.parquet \
        || mlflow run . -e train -P data_path=/data/this-week.parquet

Exit code 0 = no drift, 3 = drift found (the run is FINISHED either way), 2 = bad input, 1 = failure.
"""

from sparkmlops.core import cli
from sparkmlops.monitor.check_drift import CHECK_DRIFT

main = cli.command(CHECK_DRIFT)

if __name__ == "__main__":
    cli.run(main)
