"""Entry point `train_sklearn`: a scikit-learn pipeline (string encoding + random forest or gradient
boosting) on the same data, split and metrics as `train`, logged for score_pandas_udf and serving.

    mlflow run . -e train_sklearn -P model_type=gbt -P num_trees=200
    python train_sklearn.py --data_path /data/sf-airbnb-clean.parquet
"""

from sparkmlops.core import cli
from sparkmlops.train.train_sklearn import TRAIN_SKLEARN

main = cli.command(TRAIN_SKLEARN)

if __name__ == "__main__":
    cli.run(main)
