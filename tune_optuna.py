"""Entry point `tune_optuna`: Optuna search over the price model, one parent run, a nested run per trial.

    mlflow run . -e tune_optuna -P max_evals=32
    mlflow run . -e tune_optuna -P engine=sklearn -P parallelism=2

engine=mllib (default): TPE over the Spark ML pipeline of `train`, trials one after another in one
SparkSession. engine=sklearn: scikit-learn trials in parallel on the executors through MLflow's MlflowSparkStudy.
The parent run gets the best parameters and metrics, a `best_run_id` tag and the best model, refit on
the training split and logged as the run's model `model`.
"""

from sparkmlops.core import cli
from sparkmlops.tune.tune_optuna import TUNE_OPTUNA

main = cli.command(TUNE_OPTUNA)

if __name__ == "__main__":
    cli.run(main)
