"""One scikit-learn model per group, trained and applied on the executors with ``applyInPandas``.

train_per_group: the data is read, checked and split exactly as `train` does; each group's training
rows reach one task (``groupBy(group_col).applyInPandas``), which fits the group's model, scores the
group's test rows and logs both as a nested run of the parent run (tagged with the group) from the
executor. Groups with fewer than ``min_rows`` training rows (and rows with a null group) are skipped
and listed. A fallback model fitted on every training row (the group column as a feature) is logged
in the parent under ``fallback_model``; the parent's rmse/mae/r2 are those of the per-group models (the
fallback for skipped groups) on the whole test split, next to fallback_rmse/mae/r2 for comparison.

score_per_group: applies each group's model to its rows (``groupBy + applyInPandas``, one model load per
group); rows of a group without a model (unseen, skipped in training, or null) are scored by the
fallback model (unknown_groups=fallback), get a null prediction (null), or make the job refuse to
start, listing them (error). A column ``scored_with`` says which model scored each row.

Executors log and load the models through the tracking server: on a cluster, MLFLOW_TRACKING_URI must
be a server (or a store) they can reach.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, replace

from sparkmlops import data as data_lib
from sparkmlops import models, scoring, sklearn_models, tracking, training
from sparkmlops.errors import UserInputError

GROUP_TABLE = "group_models.csv"
FALLBACK_MODEL = "fallback_model"
UNKNOWN_GROUPS = ("fallback", "null", "error")
SPLIT_COL = "__split"
SCORED_WITH_COL = "scored_with"
MAX_LISTED = 20
RESULT_SCHEMA = ("group string, status string, train_rows long, test_rows long, run_id string, model_uri string, "
                 "rmse double, mae double, r2 double, fit_seconds double, error string")


@dataclass(frozen=True)
class PerGroupParams:
    """The `train_per_group` entry point's parameters (names match MLproject)."""

    data_path: str = ""
    label_col: str = data_lib.DEFAULT_LABEL
    group_col: str = "neighbourhood_cleansed"
    min_rows: int = 50
    model_type: str = "rf"
    num_trees: int = 100
    max_depth: int = 10
    min_samples_leaf: int = 1
    max_features: str = "1.0"
    seed: int = 42
    train_fraction: float = 0.8

    def forest_params(self) -> sklearn_models.ForestParams:
        return sklearn_models.ForestParams(self.num_trees, self.max_depth, self.min_samples_leaf,
                                           self.max_features, False, self.model_type)

    def validate(self) -> "PerGroupParams":
        if not self.group_col:
            raise UserInputError("group_col is empty: pass -P group_col=<string column>, e.g. neighbourhood_cleansed.")
        if self.group_col == self.label_col:
            raise UserInputError(f"group_col and label_col are both '{self.label_col}': group by a string column.")
        if self.min_rows < 2:
            raise UserInputError(f"min_rows must be >= 2 (a model needs rows to fit), got {self.min_rows}.")
        self.forest_params().validate()
        training.check_training_inputs(self.label_col, self.train_fraction, self.data_path)
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def check_group_col(df, group_col: str) -> None:
    """The group column exists and is a string column (from the schema: no Spark job)."""
    dtypes = dict(df.dtypes)
    if group_col not in dtypes:
        strings = [c for c, t in df.dtypes if t == "string"]
        raise UserInputError(f"group_col '{group_col}' is not in the data: pass -P group_col=<one of "
                             f"{', '.join(strings) or 'its string columns'}>.")
    if dtypes[group_col] != "string":
        raise UserInputError(f"group_col '{group_col}' is {dtypes[group_col]}, not a string column: group by a "
                             "string column (cast an id column to string first).")


def group_spec(spec: data_lib.FeatureSpec, group_col: str) -> data_lib.FeatureSpec:
    """A group's features: the data's, without the group column (constant within a group)."""
    return replace(spec, categorical_cols=[c for c in spec.categorical_cols if c != group_col])


@dataclass(frozen=True)
class GroupContext:
    """What every group's task needs: small and picklable (shipped inside the function)."""

    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    group_col: str
    spec: data_lib.FeatureSpec
    forest: sklearn_models.ForestParams
    min_rows: int
    seed: int


def _group_value(frame, group_col: str):
    import pandas as pd

    value = frame[group_col].iloc[0]
    return None if pd.isna(value) else str(value)


def train_group(context: GroupContext, frame):
    """applyInPandas function: fit, evaluate and log one group's model in a nested run; one result row."""
    import mlflow
    import pandas as pd

    group = _group_value(frame, context.group_col)
    spec = context.spec
    train = sklearn_models.stable_order(frame.loc[frame[SPLIT_COL] == "train", spec.feature_cols + [spec.label_col]])
    test = sklearn_models.stable_order(frame.loc[frame[SPLIT_COL] == "test", spec.feature_cols + [spec.label_col]])
    row = {"group": group, "status": "skipped", "train_rows": len(train), "test_rows": len(test), "run_id": None,
           "model_uri": None, "rmse": None, "mae": None, "r2": None, "fit_seconds": None, "error": None}
    if group is None or len(train) < context.min_rows:
        return pd.DataFrame([row])
    mlflow.set_tracking_uri(context.tracking_uri)
    tags = {"group_col": context.group_col, "group": group, "entry_point": "train_per_group"}
    try:
        with tracking.child_run(context.parent_run_id, context.experiment_id, f"group-{group}", tags,
                                context.tracking_uri) as child:
            row["run_id"] = child.run_id
            child.log_params({**context.forest.as_dict(), "group_col": context.group_col, "group": group,
                              "seed": context.seed})
            started = time.perf_counter()
            model = sklearn_models.build_forest(spec, context.forest, context.seed, n_jobs=1)
            model.fit(train[spec.feature_cols], train[spec.label_col].to_numpy(dtype=float))
            row["fit_seconds"] = time.perf_counter() - started
            metrics = {"train_rows": len(train), "test_rows": len(test), "fit_seconds": row["fit_seconds"]}
            if len(test):
                scores = sklearn_models.regression_metrics(test[spec.label_col], model.predict(test[spec.feature_cols]))
                row.update(scores)
                metrics.update({k: v for k, v in scores.items() if math.isfinite(v)})
            child.log_metrics(metrics)
            info = sklearn_models.log_sklearn_model(model, train[spec.feature_cols], run_id=child.run_id)
            row["model_uri"] = info.model_uri
        row["status"] = "trained"
    except Exception as exc:  # this group's run is FAILED with the error; the others go on
        row["status"] = "failed"
        row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
    return pd.DataFrame([row])


@dataclass
class PerGroupResult:
    table: object  # pandas: one row per group
    metrics: dict[str, float]
    fallback_metrics: dict[str, float]
    run_id: str


def _listed(values: list, limit: int = MAX_LISTED) -> str:
    shown = ", ".join("(null)" if v is None else str(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def group_sizes(both, group_col: str) -> dict:
    """group value (None for null) -> (training rows, test rows), from one small aggregation."""
    sizes: dict = {}
    for row in both.groupBy(group_col, SPLIT_COL).count().collect():
        train, test = sizes.get(row[0], (0, 0))
        sizes[row[0]] = (train + row["count"], test) if row[SPLIT_COL] == "train" else (train, test + row["count"])
    return sizes


def train_per_group_and_log(spark, params: PerGroupParams) -> PerGroupResult:
    """Fit one model per group on the executors, a fallback model on the driver; log all of it."""
    import pandas as pd
    from pyspark.sql import functions as F

    from sparkmlops.sklearn_training import fit_evaluate_log
    from sparkmlops.spark import session_conf, ship_package

    if params.data_path:
        check_group_col(data_lib.read_dataset(spark, params.data_path), params.group_col)
    prepared = training.prepare_data(spark, params.data_path, params.label_col, params.train_fraction, params.seed)
    try:
        check_group_col(prepared.train_df, params.group_col)
        spec = group_spec(prepared.spec, params.group_col)
        context = GroupContext(tracking.active_run_id(), tracking.experiment_id(), tracking.portable_tracking_uri(),
                               params.group_col, spec, params.forest_params(), params.min_rows, params.seed)
        tracking.set_tags({"group_col": params.group_col})
        columns = [params.group_col, *spec.feature_cols, spec.label_col]
        both = prepared.train_df.select(*columns).withColumn(SPLIT_COL, F.lit("train")).unionByName(
            prepared.test_df.select(*columns).withColumn(SPLIT_COL, F.lit("test")))
        sizes = group_sizes(both, params.group_col)
        trainable = sorted(g for g, (n, _) in sizes.items() if g is not None and n >= params.min_rows)
        skipped = [g for g in sorted(sizes, key=lambda g: (g is None, str(g))) if g not in set(trainable)]
        if not trainable:
            raise UserInputError(f"no group of '{params.group_col}' has {params.min_rows} training rows: lower "
                                 "-P min_rows or group by a column with fewer, larger groups.")
        if skipped:
            tracking.set_tags({"skipped_groups": _listed(skipped, 200)[:5000]})
            print(f"train_per_group: skipped {len(skipped)} groups with fewer than {params.min_rows} training rows "
                  f"(their rows use the fallback model): {_listed(skipped)}", flush=True)
        ship_package(spark)  # train_group lives in this package
        started = time.perf_counter()
        # One task per few groups, not what adaptive execution would coalesce a small shuffle into: the
        # work here is the fits, not the bytes shuffled.
        tasks = min(len(trainable), 4 * spark.sparkContext.defaultParallelism)
        with session_conf(spark, {"spark.sql.shuffle.partitions": str(tasks),
                                  "spark.sql.adaptive.coalescePartitions.enabled": "false"}):
            fitted = (both.filter(F.col(params.group_col).isin(trainable)).groupBy(params.group_col)
                      .applyInPandas(functools.partial(train_group, context), RESULT_SCHEMA).toPandas())
        groups_seconds = time.perf_counter() - started
        table = fitted.sort_values("group", ignore_index=True)
        if skipped:
            skipped_rows = pd.DataFrame([{"group": g, "status": "skipped", "train_rows": sizes[g][0],
                                          "test_rows": sizes[g][1]} for g in skipped], columns=fitted.columns)
            table = pd.concat([table, skipped_rows.astype(fitted.dtypes.to_dict())], ignore_index=True)
        tracking.log_dataframe_csv(table, GROUP_TABLE)
        trained, failed = table[table["status"] == "trained"], table[table["status"] == "failed"]
        tracking.log_metrics({"groups_trained": len(trained), "groups_skipped": len(skipped),
                              "groups_failed": len(failed), "groups_seconds": groups_seconds})
        if len(failed):
            first = failed.iloc[0]
            raise RuntimeError(f"{len(failed)} of {len(trainable)} group models failed (their nested runs are FAILED "
                               f"with the error); first, group '{first['group']}': {first['error']}")

        # The fallback model: every training row, the group column as a feature.
        fallback = sklearn_models.build_forest(prepared.spec, params.forest_params(), params.seed, n_jobs=-1)
        fallback_metrics, fallback_uri = fit_evaluate_log(prepared, fallback, prefix="fallback_", name=FALLBACK_MODEL)

        group_models = GroupModels(params.group_col, dict(zip(trained["group"], trained["model_uri"])), fallback_uri)
        scored = score_groups(spark, prepared.test_df, group_models, "fallback", models.resolve_model(
            fallback_uri, require_flavor="python_function"))
        metrics = training.regression_metrics(scored, spec.label_col)
        tracking.log_metrics(metrics)
        return PerGroupResult(table, metrics, fallback_metrics, context.parent_run_id)
    finally:
        prepared.unpersist()


# ----------------------------------------------------------------------------------------------
# Scoring

@dataclass(frozen=True)
class GroupModels:
    """A train_per_group run's models: group value -> model URI, and the fallback's URI."""

    group_col: str
    by_group: dict
    fallback_uri: str


def load_group_models(run_id: str) -> GroupModels:
    """Read a train_per_group run's table of models (no Spark); one clear line when it is not one."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not run_id:
        raise UserInputError("run_id is empty: pass -P run_id=<id of a train_per_group run>.")
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException as exc:
        raise UserInputError(f"run '{run_id}' not found in {mlflow.get_tracking_uri()}: pass the id of a "
                             "train_per_group run (see its parent run in the MLflow UI).") from exc
    group_col = run.data.tags.get("group_col")
    if not group_col:
        raise UserInputError(f"run '{run_id}' is not a train_per_group run (no group_col tag): pass the parent "
                             "run of a train_per_group run.")
    if run.info.status != "FINISHED":
        raise UserInputError(f"run '{run_id}' ended {run.info.status}: score with a train_per_group run that "
                             "FINISHED.")
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=GROUP_TABLE)
    table = pd.read_csv(path, keep_default_na=False, na_values={"run_id": [""], "model_uri": [""]},
                        dtype={"group": str})
    trained = table[table["status"] == "trained"]
    return GroupModels(group_col, dict(zip(trained["group"], trained["model_uri"])), f"runs:/{run_id}/{FALLBACK_MODEL}")


_GROUP_MODELS: dict[str, object] = {}  # per Python worker: model URI -> loaded model (the fallback's reuse)


def _load_model(uri: str, tracking_uri: str):
    model = _GROUP_MODELS.get(uri)
    if model is None:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        model = mlflow.pyfunc.load_model(uri)
        if len(_GROUP_MODELS) > 64:
            _GROUP_MODELS.clear()
        _GROUP_MODELS[uri] = model
    return model


def score_group(group_models: GroupModels, unknown_groups: str, tracking_uri: str, group_columns: list[str],
                fallback_columns: list[str], casts: dict[str, str], frame):
    """applyInPandas function: one group's rows plus ``prediction`` and ``scored_with``."""
    import numpy as np

    from sparkmlops.pandas_scoring import as_prediction, model_features

    group = _group_value(frame, group_models.group_col)
    uri = group_models.by_group.get(group) if group is not None else None
    if uri is not None:
        model = _load_model(uri, tracking_uri)
        features = model_features(frame, group_columns, casts)
        return frame.assign(prediction=as_prediction(model.predict(features), len(frame)), scored_with="group")
    if unknown_groups == "fallback":
        model = _load_model(group_models.fallback_uri, tracking_uri)
        features = model_features(frame, fallback_columns, casts)
        return frame.assign(prediction=as_prediction(model.predict(features), len(frame)), scored_with="fallback")
    return frame.assign(prediction=np.full(len(frame), np.nan), scored_with=None)


def score_groups(spark, df, group_models: GroupModels, unknown_groups: str, fallback: models.ResolvedModel):
    """``df`` plus ``prediction`` and ``scored_with``, each group scored by its own model."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    from sparkmlops.pandas_scoring import pandas_casts
    from sparkmlops.spark import ship_package

    check_group_col(df, group_models.group_col)
    casts = pandas_casts(df, fallback)  # the fallback's inputs are every group model's plus the group column
    fallback_columns = [c for c, _ in fallback.input_columns()]
    group_columns = [c for c in fallback_columns if c != group_models.group_col]
    ship_package(spark)
    schema = StructType(df.schema.fields + [StructField("prediction", DoubleType(), True),
                                            StructField(SCORED_WITH_COL, StringType(), True)])
    scorer = functools.partial(score_group, group_models, unknown_groups, tracking.portable_tracking_uri(),
                               group_columns, fallback_columns, casts)
    scored = df.groupBy(group_models.group_col).applyInPandas(scorer, schema)
    # null predictions (unknown_groups=null) are written as nulls, not NaN
    return scored.withColumn("prediction", F.when(F.isnan("prediction"), None).otherwise(F.col("prediction")))


@dataclass(frozen=True)
class ScorePerGroupParams:
    """The `score_per_group` entry point's parameters (names match MLproject)."""

    run_id: str = ""
    input_path: str = ""
    output_path: str = ""
    unknown_groups: str = "fallback"
    mode: str = "error"

    def validate(self) -> tuple[GroupModels, models.ResolvedModel]:
        if self.unknown_groups not in UNKNOWN_GROUPS:
            raise UserInputError(f"unknown_groups must be fallback (score them with the fallback model), null "
                                 f"(no prediction) or error (refuse the input), got '{self.unknown_groups}'.")
        scoring.check_batch_paths(self.input_path, self.output_path, self.mode)
        group_models = load_group_models(self.run_id)
        fallback = models.resolve_model(group_models.fallback_uri, require_flavor="python_function")
        return group_models, fallback

    def as_dict(self) -> dict:
        return asdict(self)


def score_per_group(spark, params: ScorePerGroupParams, checked: tuple[GroupModels, models.ResolvedModel]) -> dict:
    """The `score_per_group` job: checked input, atomic output, unknown groups counted and handled."""
    from pyspark.sql import functions as F

    group_models, fallback = checked
    counts: dict = {}

    def score(input_df):
        check_group_col(input_df, group_models.group_col)
        scoring.check_no_prediction_column(input_df, ("prediction", SCORED_WITH_COL))
        group_rows = input_df.groupBy(group_models.group_col).agg(F.count(F.lit(1)).alias("rows")).collect()
        unknown = sorted(((r[0], r["rows"]) for r in group_rows if r[0] not in group_models.by_group),
                         key=lambda item: (item[0] is None, str(item[0])))
        counts.update(groups=len(group_rows), unknown_groups=len(unknown), rows_unknown_group=sum(n for _, n in unknown))
        if unknown and params.unknown_groups == "error":
            raise UserInputError(f"{len(unknown)} groups of '{group_models.group_col}' have no model: "
                                 f"{_listed([g for g, _ in unknown])}; pass -P unknown_groups=fallback (the "
                                 "fallback model) or null, or train with those groups.")
        if unknown:
            print(f"score_per_group: {counts['rows_unknown_group']} rows in {len(unknown)} groups without a model "
                  f"({params.unknown_groups}): {_listed([g for g, _ in unknown])}", flush=True)
        return score_groups(spark, input_df, group_models, params.unknown_groups, fallback)

    summary = scoring.score_input_to_output(spark, params, fallback, score,
                                            tags={"group_col": group_models.group_col, "per_group_run_id": params.run_id,
                                                  "unknown_groups": params.unknown_groups})
    tracking.log_metrics(counts)
    return {**summary, **counts}
