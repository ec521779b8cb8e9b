"""The metrics by task: regression (rmse, mae, r2, as Spark's RegressionEvaluator defines them) on Spark predictions
or arrays; classification (accuracy, weighted f1, log_loss; roc_auc and pr_auc for two classes) with Spark's
evaluators, on the cluster; the same on arrays for the single-node (scikit-learn) models."""

from __future__ import annotations

import numpy as np

from sparkmlops.core.errors import UserInputError

# The metrics every entry point reports, and which way is better.
METRICS = {"rmse": "root mean squared error", "mae": "mean absolute error", "r2": "coefficient of determination"}
CLASSIFICATION_METRICS = {
    "accuracy": "share of rows classified right",
    "f1": "F1 weighted by class frequency",
    "log_loss": "mean negative log-likelihood of the true class",
    "roc_auc": "area under the ROC curve (two classes)",
    "pr_auc": "area under the precision-recall curve (two classes)",
}
LOWER_IS_BETTER = {
    "rmse": True,
    "mae": True,
    "r2": False,
    "accuracy": False,
    "f1": False,
    "log_loss": True,
    "roc_auc": False,
    "pr_auc": False,
}


TASK_METRICS = {"regression": METRICS, "classification": CLASSIFICATION_METRICS}
DEFAULT_METRIC = {"regression": "rmse", "classification": "log_loss"}
LOG_LOSS_EPS = 1e-15  # Spark's MulticlassClassificationEvaluator clips probabilities here
METRIC_CHOICES = {"auto": "rmse for a regressor, log_loss for a classifier", **METRICS, **CLASSIFICATION_METRICS}


def metric_for(metric: str, task: str, n_classes: int = 0) -> str:
    """The metric a search or a gate uses: ``metric``, or the task's default for "auto"; one line when it does
    not apply to the task."""
    chosen = DEFAULT_METRIC[task] if metric == "auto" else metric
    if chosen not in TASK_METRICS[task]:
        raise UserInputError(
            f"metric {chosen} does not apply to a {task} model: pass -P metric= one of "
            f"{', '.join(TASK_METRICS[task])} (or auto)."
        )
    if chosen in ("roc_auc", "pr_auc") and n_classes != 2:
        raise UserInputError(
            f"metric {chosen} needs two classes, the label has {n_classes}: pass -P metric=log_loss, accuracy or f1."
        )
    return chosen


def classification_metrics(
    predictions,
    n_classes: int,
    label_col: str = "__label_index",
    prediction_col: str = "__prediction_index",
    probability_col: str = "probability",
) -> dict[str, float]:
    """accuracy, f1 (weighted) and log_loss; roc_auc and pr_auc when there are two classes (class 1 positive)."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator, MulticlassClassificationEvaluator

    if predictions.isEmpty():
        raise UserInputError("the test split is empty: use more data or a smaller train_fraction.")
    multiclass = MulticlassClassificationEvaluator(
        labelCol=label_col, predictionCol=prediction_col, probabilityCol=probability_col
    )
    metrics = {
        name: multiclass.setMetricName(spark_name).evaluate(predictions)
        for name, spark_name in (("accuracy", "accuracy"), ("f1", "f1"), ("log_loss", "logLoss"))
    }
    if n_classes == 2:
        binary = BinaryClassificationEvaluator(labelCol=label_col, rawPredictionCol=probability_col)
        metrics["roc_auc"] = binary.setMetricName("areaUnderROC").evaluate(predictions)
        metrics["pr_auc"] = binary.setMetricName("areaUnderPR").evaluate(predictions)
    return metrics


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


def array_classification_metrics(y_true, probability, classes) -> dict[str, float]:
    """accuracy, f1 (weighted) and log_loss of class probabilities (columns in ``classes``' order, the
    predicted class the most probable one, as Spark's classifiers decide); roc_auc and pr_auc for two
    classes, ``classes[1]`` positive. pr_auc is the area under the precision-recall curve, as Spark's
    areaUnderPR computes it (trapezoids), not scikit-learn's average precision."""
    from sklearn.metrics import accuracy_score, auc, f1_score, precision_recall_curve, roc_auc_score

    probability = np.asarray(probability, dtype=float)
    index = {label: i for i, label in enumerate(classes)}
    truth = np.array([index[label] for label in y_true])
    predicted = probability.argmax(axis=1)
    labels = list(range(len(classes)))
    metrics = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1": float(f1_score(truth, predicted, average="weighted", labels=labels, zero_division=0)),
        # as Spark's logLoss: the true class's probability clipped at 1e-15, no renormalising
        "log_loss": float(np.mean(-np.log(np.maximum(probability[np.arange(len(truth)), truth], LOG_LOSS_EPS)))),
    }
    if len(classes) == 2:
        positive = probability[:, 1]
        metrics["roc_auc"] = float(roc_auc_score(truth, positive)) if len(set(truth)) == 2 else float("nan")
        precision, recall, _ = precision_recall_curve(truth, positive)
        metrics["pr_auc"] = float(auc(recall, precision))
    return metrics


def headline(metrics: dict) -> str:
    """The metrics an entry point's last line shows: rmse, r2 and mae, or accuracy, f1, log_loss (and roc_auc)."""
    if "rmse" in metrics:
        return f"rmse={metrics['rmse']:.2f} r2={metrics['r2']:.3f} mae={metrics['mae']:.2f}"
    return " ".join(f"{m}={metrics[m]:.3f}" for m in ("accuracy", "f1", "log_loss", "roc_auc") if m in metrics)
