"""What train_per_group writes and score_per_group reads: the group column, the table of per-group models and the
fallback model."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass, replace

from sparkmlops.core import mlflow_models, tracking
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.spark import ship_package
from sparkmlops.data import schema as data_schema
from sparkmlops.inference import resolve
from sparkmlops.inference.pandas_predict import as_scores, batch_predictor, model_features, output_fields, pandas_casts

GROUP_TABLE = "group_models.csv"


FALLBACK_MODEL = "fallback_model"


MAX_LISTED = 20


def check_group_col(df, group_col: str) -> None:
    """The group column exists and is a string column (from the schema: no Spark job)."""
    dtypes = dict(df.dtypes)
    if group_col not in dtypes:
        strings = [c for c, t in df.dtypes if t == "string"]
        raise UserInputError(
            f"group_col '{group_col}' is not in the data: pass -P group_col=<one of "
            f"{', '.join(strings) or 'its string columns'}>."
        )
    if dtypes[group_col] != "string":
        raise UserInputError(
            f"group_col '{group_col}' is {dtypes[group_col]}, not a string column: group by a "
            "string column (cast an id column to string first)."
        )


def group_spec(spec: data_schema.FeatureSpec, group_col: str) -> data_schema.FeatureSpec:
    """A group's features: the data's, without the group column (constant within a group)."""
    return replace(spec, categorical_cols=[c for c in spec.categorical_cols if c != group_col])


def group_value(frame, group_col: str):
    import pandas as pd

    value = frame[group_col].iloc[0]
    return None if pd.isna(value) else str(value)


def listed(values: list, limit: int = MAX_LISTED) -> str:
    shown = ", ".join("(null)" if v is None else str(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


@dataclass(frozen=True)
class GroupModels:
    """A train_per_group run's models: group value -> model URI, and the fallback's URI."""

    group_col: str
    by_group: dict
    fallback_uri: str


def load_group_models(run_id: str) -> GroupModels:
    """Read a train_per_group run's table of models (no Spark); one clear line when it is not one."""
    import pandas as pd

    if not run_id:
        raise UserInputError("run_id is empty: pass -P run_id=<id of a train_per_group run>.")
    run = tracking.get_run(run_id)
    if run is None:
        raise UserInputError(
            f"run '{run_id}' not found in {tracking.tracking_uri()}: pass the id of a "
            "train_per_group run (see its parent run in the MLflow UI)."
        )
    group_col = run.data.tags.get("group_col")
    if not group_col:
        raise UserInputError(
            f"run '{run_id}' is not a train_per_group run (no group_col tag): pass the parent "
            "run of a train_per_group run."
        )
    if run.info.status != "FINISHED":
        raise UserInputError(f"run '{run_id}' ended {run.info.status}: score with a train_per_group run that FINISHED.")
    with tempfile.TemporaryDirectory(prefix="sparkmlops-groups-") as download:
        path = mlflow_models.download_artifacts(run_id=run_id, artifact_path=GROUP_TABLE, dst_path=download)
        table = pd.read_csv(
            path, keep_default_na=False, na_values={"run_id": [""], "model_uri": [""]}, dtype={"group": str}
        )
    trained = table[table["status"] == "trained"]
    return GroupModels(group_col, dict(zip(trained["group"], trained["model_uri"])), f"runs:/{run_id}/{FALLBACK_MODEL}")


SCORED_WITH_COL = "scored_with"


_GROUP_MODELS: dict[str, object] = {}  # per Python worker: model URI -> its batch predictor (the fallback's reuse)


def _predictor(uri: str, tracking_uri: str):
    """The model's batch predictor (a classifier's answers its classes and probabilities), loaded once."""
    predict = _GROUP_MODELS.get(uri)
    if predict is None:
        tracking.set_tracking_uri(tracking_uri)
        predict = batch_predictor(mlflow_models.load_pyfunc_model(uri))
        if len(_GROUP_MODELS) > 64:
            _GROUP_MODELS.clear()
        _GROUP_MODELS[uri] = predict
    return predict


def score_group(
    group_models: GroupModels,
    unknown_groups: str,
    tracking_uri: str,
    group_columns: list[str],
    fallback_columns: list[str],
    casts: dict[str, str],
    classifier: bool,
    frame,
):
    """applyInPandas function: one group's rows plus the scores (``prediction``, and a classifier's
    ``probability``) and ``scored_with``."""
    import numpy as np

    group = group_value(frame, group_models.group_col)
    uri = group_models.by_group.get(group) if group is not None else None
    if uri is not None:
        columns, scored_with = group_columns, "group"
    elif unknown_groups == "fallback":
        uri, columns, scored_with = group_models.fallback_uri, fallback_columns, "fallback"
    elif classifier:
        return frame.assign(prediction=None, probability=None, scored_with=None)
    else:
        return frame.assign(prediction=np.full(len(frame), np.nan), scored_with=None)
    answered = _predictor(uri, tracking_uri)(model_features(frame, columns, casts))
    return frame.assign(**as_scores(answered, len(frame), classifier), scored_with=scored_with)


def score_groups(spark, df, group_models: GroupModels, unknown_groups: str, fallback: resolve.ResolvedModel):
    """``df`` plus the scores (``output_fields``) and ``scored_with``, each group scored by its own model."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    check_group_col(df, group_models.group_col)
    casts = pandas_casts(df, fallback)  # the fallback's inputs are every group model's plus the group column
    fallback_columns = [c for c, _ in fallback.input_columns()]
    group_columns = [c for c in fallback_columns if c != group_models.group_col]
    ship_package(spark)
    classifier = fallback.task == "classification"
    schema = StructType(df.schema.fields + output_fields(fallback) + [StructField(SCORED_WITH_COL, StringType(), True)])
    scorer = functools.partial(
        score_group,
        group_models,
        unknown_groups,
        tracking.portable_tracking_uri(),
        group_columns,
        fallback_columns,
        casts,
        classifier,
    )
    scored = df.groupBy(group_models.group_col).applyInPandas(scorer, schema)
    if classifier:
        return scored
    # null predictions (unknown_groups=null) are written as nulls, not NaN
    return scored.withColumn("prediction", F.when(F.isnan("prediction"), None).otherwise(F.col("prediction")))
