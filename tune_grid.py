"""Entry point `tune_grid`: scikit-learn GridSearchCV over a random forest, distributed with joblibspark.

    mlflow run . -e tune_grid -P parallelism=2
    mlflow run . -e tune_grid -P param_grid='{"num_trees": [50, 100], "max_depth": [8, 0]}'

Each candidate is a nested run with its cross-validated metric; the parent run gets cv_results.csv, the
best parameters, a `best_run_id` tag, the test metrics and the best model under `model`.
"""

from sparkmlops.core import cli
from sparkmlops.tune.tune_grid import TUNE_GRID

main = cli.command(TUNE_GRID)

if __name__ == "__main__":
    cli.run(main)
