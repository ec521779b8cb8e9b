"""Entry points `main` and `train`: fit the book's Spark ML pipeline on train's split, log it, and register it
when asked."""

from __future__ import annotations

from sparkmlops.core.model_registry import register_result
from sparkmlops.data.splits import prepare_data
from sparkmlops.fitting.spark_pipeline import TrainParams, TrainResult, fit_evaluate_log


def train_and_log(spark, params: TrainParams) -> TrainResult:
    """Train the pipeline and log everything to the active MLflow run (and register the model when
    ``params.register_as`` names a registered model). Returns what was logged."""
    prepared = prepare_data(spark, params.data_path, params.label_col, params.train_fraction, params.seed)
    try:
        result = fit_evaluate_log(prepared, params)
        if params.register_as:
            result.registered_version = register_result(
                params.register_as, "train", result.model_uri, params.model_params(), result.metrics, prepared
            )
        return result
    finally:
        prepared.unpersist()
