"""Entry points `main` and `train`: fit the book's random-forest price pipeline and log it to MLflow.

    mlflow run . -P num_trees=200 -P max_depth=8
    python train.py --data_path /data/sf-airbnb-clean.parquet

With no data_path, the embedded generated SF Airbnb dataset is used (created on first use).
"""

from sparkmlops.core import cli
from sparkmlops.train.train import TRAIN

main = cli.command(TRAIN)

if __name__ == "__main__":
    cli.run(main)
