"""Entry point `check_drift`: the statistics of drift_statistics over a reference (a model's training
data, or a path) and the current data; a table, a plot, the verdict on the run (and on the model's
registry version), and DriftFound (exit 3, run FINISHED) when a feature drifted.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from sparkmlops.core import model_registry, plots, tracking
from sparkmlops.core.entry_points import EntryPoint, param
from sparkmlops.core.errors import DriftFound, UserInputError
from sparkmlops.data import parameters, validation
from sparkmlops.data import schema as data_schema
from sparkmlops.data.schema import sql_column
from sparkmlops.inference import resolve, scoring
from sparkmlops.monitor.drift_statistics import (
    NULL_RATE_THRESHOLD,
    FeatureDrift,
    feature_drift,
    numeric_drift,
)

# ----------------------------------------------------------------------------------------------
# The check_drift job


@dataclass(frozen=True)
class DriftParams:
    model_uri: str = parameters.model_uri(
        "A model whose training data is the reference (and whose predictions are compared); or give --reference_path.",
        required=False,
    )
    reference_path: str = param("", "Reference data (parquet or CSV).")
    current_path: str = param("", "The data to check.", required=True)
    threshold: float = param(0.2, "PSI at or above which a feature drifted.")
    bins: int = param(10, "Quantile bins of numeric features.")

    def validate(self):
        """(resolved model or None, reference path): everything checkable without Spark."""

        if bool(self.model_uri) == bool(self.reference_path):
            raise UserInputError(
                "pass exactly one of model_uri (its training data is the reference) and reference_path."
            )
        if not self.current_path:
            raise UserInputError("current_path is empty: pass -P current_path=<data to check>.")
        validation.check_input_path(self.current_path, "current_path")
        if not 0 < self.threshold <= 10:
            raise UserInputError(
                f"threshold must be in (0, 10] (PSI; 0.1 = some drift, 0.2 = significant), got {self.threshold}."
            )
        if not 2 <= self.bins <= 100:
            raise UserInputError(f"bins must be in 2..100, got {self.bins}.")
        model = resolve.resolve_model(self.model_uri) if self.model_uri else None
        reference = self.reference_path or _training_data_path(model)
        validation.check_input_path(reference, "reference_path")
        return model, reference

    def as_dict(self) -> dict:
        return asdict(self)


def _training_label(model) -> str:
    return tracking.run_parameters_of(model.run_id).get("label_col", "")


def _training_data_path(model) -> str:
    path = tracking.run_parameters_of(model.run_id).get("data_path_resolved")
    if not path:
        raise UserInputError(
            f"model '{model.identity}' has no training data on record (no data_path_resolved "
            "parameter in its run): pass -P reference_path=<its training data>."
        )
    return path


def drift_table(results: list[FeatureDrift], threshold: float, retyped: dict[str, str] | None = None):
    """One row per feature: the statistics, ``null_rate_change``, ``type_change`` and ``drifted`` with
    its ``drift_reason``: PSI >= threshold, a missing-value rate that moved by NULL_RATE_THRESHOLD or
    more, or a type that changed (string <-> numeric). Drifted features first, then by PSI."""
    import pandas as pd

    retyped = retyped or {}
    table = pd.DataFrame([r.as_dict() for r in results])
    table["null_rate_change"] = table["current_null_rate"] - table["reference_null_rate"]
    table["type_change"] = [retyped.get(f, "") for f in table["feature"]]
    reasons = []
    for row in table.itertuples():
        why = [f"PSI {row.psi:.2f}"] if row.psi >= threshold else []
        if abs(row.null_rate_change) >= NULL_RATE_THRESHOLD - 1e-12:
            why.append(f"missing {row.reference_null_rate:.0%} -> {row.current_null_rate:.0%}")
        if row.type_change:
            why.append(f"type {row.type_change}")
        reasons.append("; ".join(why))
    table["drift_reason"] = reasons
    table["drifted"] = table["drift_reason"] != ""
    return table.sort_values(["drifted", "psi"], ascending=[False, False]).reset_index(drop=True)


PREDICTION_FEATURE = "prediction (model output)"
_NUMERIC_KINDS = ("double", "float", "long", "integer")


def scorable_predictions(spark_model, df, model):
    """(predictions, unscorable rows): one column, ``prediction``, with the model's prediction for every row
    it can score and null for the others, and how many rows it could not score.

    Drifted data is what this check exists to see, so it must not stop the check: a row is unscorable when
    one of the model's numeric inputs is infinite, or, for a model that does not impute them, null, NaN or a
    value that does not cast to the signature's type (a column whose type drifted). Those rows are scored
    with placeholder inputs, so that one pass scores the rest, and get a null prediction: the prediction's
    missing-value rate is then the share of rows the model could not score, which drift_table reports as
    drift like any other missing-value rate."""
    # SQL text: a Column object costs one driver round trip per call on each column.
    typed = {c: resolve.SPARK_TYPE.get(kind, "string") for c, kind in model.input_columns()}
    numeric = [sql_column(c) for c, kind in model.input_columns() if kind in _NUMERIC_KINDS]
    # As double: abs() of an integer type's minimum overflows (an error under ANSI); no integer is infinite.
    infinite = [f"coalesce(abs(CAST({c} AS DOUBLE)) = CAST('Infinity' AS DOUBLE), false)" for c in numeric]
    if model.imputes_missing:  # nulls and NaN are the model's to impute: only infinities cannot be scored
        bad = infinite
    else:
        bad = [f"{c} IS NULL OR isnan({c}) OR {inf}" for c, inf in zip(numeric, infinite)]
    frame = df.selectExpr(*[f"try_cast({sql_column(c)} AS {t}) AS {sql_column(c)}" for c, t in typed.items()])
    frame = frame.selectExpr(
        "*", f"NOT ({' OR '.join(f'({b})' for b in bad)}) AS {_SCORABLE}" if bad else f"true AS {_SCORABLE}"
    )
    unscorable = frame.filter(f"NOT {_SCORABLE}").count()  # no model in this pass: the inputs only
    placeholders = {
        c: f"CASE WHEN {_SCORABLE} THEN {sql_column(c)} ELSE CAST(0 AS {typed[c]}) END AS {sql_column(c)}"
        for c, kind in model.input_columns()
        if kind in _NUMERIC_KINDS
    }
    scored = spark_model.transform(frame.selectExpr(*[placeholders.get(c, sql_column(c)) for c in frame.columns]))
    return scored.selectExpr(f"CASE WHEN {_SCORABLE} THEN prediction END AS prediction"), unscorable


_SCORABLE = "__sparkmlops_scorable"


def check_drift_and_log(spark, params: DriftParams, checked) -> dict:
    """Drift of ``params.current_path`` against the reference, per feature (and of the model's
    predictions when a model is given); logs the table, the figure, max_psi and drifted_features."""
    from pyspark.sql import functions as F

    model, reference_path = checked
    reference = validation.read_dataset(spark, reference_path)
    current = validation.read_dataset(spark, params.current_path)
    for what, path, df in (("reference", reference_path, reference), ("current", params.current_path, current)):
        if df.isEmpty():
            # No rows is a broken input, not "no drift": there is nothing whose drift could be measured.
            raise UserInputError(
                f"the {what} data '{path}' has no rows: nothing to compare; check the path and the job that writes it."
            )
    types, current_types = dict(reference.dtypes), dict(current.dtypes)
    features = [c for c, _ in model.input_columns()] if model else list(reference.columns)
    label = _training_label(model) if model else ""
    if label and label in reference.columns and label in current.columns:
        features.append(label)  # the label's own shift (e.g. prices) is drift the features may not show
    missing = [c for c in features if c not in current.columns]
    if missing:
        raise UserInputError(
            f"current_path lacks {len(missing)} column(s) of the reference: "
            f"{', '.join(missing[:10])}: check the path or the model."
        )

    def kind(spark_type) -> str:
        numeric_type = spark_type in data_schema.NUMERIC_TYPES or str(spark_type).startswith("decimal")
        return "numeric" if numeric_type else "string" if spark_type == "string" else str(spark_type)

    retyped = {c: f"{types[c]} -> {current_types[c]}" for c in features if kind(types[c]) != kind(current_types[c])}
    numeric = [c for c in features if kind(types[c]) == "numeric"]
    categorical = [c for c in features if kind(types[c]) in ("string", "boolean")]
    # booleans (features and labels of train's models) drift as two categories
    booleans_as_text = {c: F.col(c).cast("string") for c in categorical if types[c] == "boolean"}
    results = feature_drift(
        reference.withColumns(booleans_as_text),
        current.withColumns(booleans_as_text),
        numeric,
        categorical,
        params.bins,
    )
    unscorable = {}
    if model is not None:
        spark_model = scoring.load_spark_model(model)
        (reference_predictions, reference_unscorable), (current_predictions, current_unscorable) = (
            scorable_predictions(spark_model, df, model) for df in (reference, current)
        )
        if model.task == "classification":  # a shift in the shares of the predicted classes
            as_text = [
                p.select(F.col("prediction").cast("string").alias("prediction"))
                for p in (reference_predictions, current_predictions)
            ]
            shift = feature_drift(*as_text, [], ["prediction"], params.bins)[0]
        else:
            shift = numeric_drift(reference_predictions, current_predictions, ["prediction"], params.bins)[0]
        results.append(FeatureDrift(**{**shift.as_dict(), "feature": PREDICTION_FEATURE}))
        unscorable = {"reference_unscorable_rows": reference_unscorable, "current_unscorable_rows": current_unscorable}
    table = drift_table(results, params.threshold, retyped)
    drifted = table[table["drifted"]]
    summary = {
        "max_psi": float(table["psi"].max()),
        "drifted_features": int(len(drifted)),
        "max_ks": float(table["ks"].max(skipna=True) if table["ks"].notna().any() else 0.0),
        "features_checked": int(len(table)),
        **unscorable,
    }
    tracking.log_metrics(summary)
    tracking.log_dataframe_csv(table, "drift/drift_per_feature.csv")
    fig = plots.drift_figure(table, params.threshold)
    tracking.log_figure(fig, "drift/psi_per_feature.png")
    plots.close(fig)
    shown = ", ".join(f"{r.feature} ({r.drift_reason})" for r in drifted.head(5).itertuples())
    verdict = (
        f"drift: {len(drifted)} of {len(table)} features drifted ({shown}{', ...' if len(drifted) > 5 else ''})"
        if len(drifted)
        else f"no drift: max PSI {summary['max_psi']:.3f} < {params.threshold}, "
        f"missing-value rates within {NULL_RATE_THRESHOLD}, no type changed"
    )
    if unscorable.get("current_unscorable_rows"):
        verdict += (
            f"; the model could not score {unscorable['current_unscorable_rows']} current rows (a null, NaN, "
            "infinite or uncastable input): prediction drift is over the others"
        )
    tracking.set_tags(
        {
            "drift_verdict": verdict,
            "reference_path": reference_path,
            "current_path": params.current_path,
            **(model.tags() if model else {}),
        }
    )
    if model is not None and model.registered_name and model.version:
        # The registry shows, on the version itself, whether the data it now sees drifted from its training data.

        model_registry.set_version_tags(
            model.registered_name,
            model.version,
            {
                "drift_verdict": verdict,
                "drift_max_psi": f"{summary['max_psi']:.4f}",
                "drift_run_id": tracking.active_run_id(),
                "drift_current_path": params.current_path,
            },
        )
    return {**summary, "verdict": verdict, "drift_found": bool(len(drifted))}


def check_drift(spark, params: DriftParams, checked) -> dict:
    """The `check_drift` job: log the check, and end with DriftFound (exit 3, run FINISHED) on drift."""
    summary = check_drift_and_log(spark, params, checked)
    if summary["drift_found"]:
        raise DriftFound(summary["verdict"])
    return summary


CHECK_DRIFT = EntryPoint(
    name="check_drift",
    script="check_drift.py",
    summary="Check the current data for drift against the reference.",
    params=DriftParams,
    job=check_drift,
    run_name=lambda p: f"check_drift {os.path.basename(str(p.current_path).rstrip('/'))}",
    report=lambda p, summary: f"check_drift: {summary['verdict']}",
)
