"""Regression metrics (rmse, mae, r2, as Spark's RegressionEvaluator defines them), on Spark predictions or arrays."""

from __future__ import annotations

import numpy as np

from sparkmlops.core.errors import UserInputError

# The metrics every entry point reports, and which way is better.
METRICS = {"rmse": "root mean squared error", "mae": "mean absolute error", "r2": "coefficient of determination"}
LOWER_IS_BETTER = {"rmse": True, "mae": True, "r2": False}


def regression_metrics(predictions, label_col: str) -> dict[str, float]:
    """rmse, mae and r2 (as RegressionEvaluator defines them) in one pass."""
    from pyspark.sql import functions as F

    err = F.col("prediction") - F.col(label_col)
    row = predictions.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(err * err).alias("sse"),
        F.sum(F.abs(err)).alias("sae"),
        F.avg(F.col(label_col)).alias("mean"),
        F.var_pop(F.col(label_col)).alias("var"),
    ).first()
    n = row["n"]
    if not n:
        raise UserInputError("the test split is empty: use more data or a smaller train_fraction.")
    mse = row["sse"] / n
    r2 = 1.0 - mse / row["var"] if row["var"] else float("nan")
    return {"rmse": mse**0.5, "mae": row["sae"] / n, "r2": r2}


def array_regression_metrics(y_true, y_pred) -> dict[str, float]:
    """rmse, mae and r2 defined exactly as regression_metrics does on Spark predictions."""
    y_true = np.asarray(y_true, dtype=float)
    err = np.asarray(y_pred, dtype=float) - y_true
    var = float(np.var(y_true))
    mse = float(np.mean(err * err))
    return {"rmse": mse**0.5, "mae": float(np.mean(np.abs(err))), "r2": 1.0 - mse / var if var else float("nan")}
