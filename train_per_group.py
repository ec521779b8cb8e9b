"""Entry point `train_per_group`: one scikit-learn model per group (default: per neighbourhood), trained on
the executors with groupBy().applyInPandas(), each logged as a nested run tagged with its group.

    mlflow run . -e train_per_group -P group_col=neighbourhood_cleansed -P min_rows=50
    mlflow run . -e train_per_group -P data_path=/tmp/iot.parquet -P label_col=power -P group_col=device_id

The parent run logs group_models.csv (group, rows, run id, rmse, ...), the skipped groups, a fallback
model for rows of groups without a model, and the per-group models' metrics on the test split.
"""

from sparkmlops.core import cli
from sparkmlops.train.train_per_group import TRAIN_PER_GROUP

main = cli.command(TRAIN_PER_GROUP)

if __name__ == "__main__":
    cli.run(main)
