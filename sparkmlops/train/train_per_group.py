"""Entry point `train_per_group`: one scikit-learn model per group, trained on the executors with
``applyInPandas``.

The data is read, checked and split exactly as `train` does; each group's training
rows reach one task (``groupBy(group_col).applyInPandas``), which fits the group's model, scores the
group's test rows and logs both as a nested run of the parent run (tagged with the group) from the
executor. Groups with fewer than ``min_rows`` training rows (and rows with a null group), and a
classifier's groups with one class, are skipped and listed. A fallback model fitted on every training row
(the group column as a feature) is logged in the parent under ``fallback_model``; the parent's metrics
(rmse/mae/r2, or accuracy/f1/log_loss for a classifier) are those of the per-group models (the fallback
for skipped groups) on the whole test split, next to the fallback's alone (``fallback_<metric>``).
Every model is train_sklearn's, regressor or classifier, imputing as it does, with the data's classes.

Executors log and load the models through the tracking server: on a cluster, MLFLOW_TRACKING_URI must
be a server (or a store) they can reach.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, fields

from sparkmlops.core import choices, mlflow_models, tracking
from sparkmlops.core.entry_points import EntryPoint, param
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.spark import session_conf, ship_package
from sparkmlops.data import parameters, splits, validation
from sparkmlops.data import schema as data_schema
from sparkmlops.fitting import metrics as model_metrics
from sparkmlops.fitting import sklearn_forest
from sparkmlops.fitting.sklearn_forest import fit_evaluate_log
from sparkmlops.inference import resolve
from sparkmlops.inference.group_models import (
    FALLBACK_MODEL,
    GROUP_TABLE,
    GroupModels,
    check_group_col,
    group_spec,
    group_value,
    listed,
    score_groups,
)

SPLIT_COL = "__split"
# a group model's test metrics, by task (a group's test rows may hold one class: no roc_auc or pr_auc)
GROUP_METRICS = {"regression": ("rmse", "mae", "r2"), "classification": ("accuracy", "f1", "log_loss")}


def result_schema(task: str) -> str:
    """The table of group models, one row per group (group_models.csv)."""
    metrics = ", ".join(f"{name} double" for name in GROUP_METRICS[task])
    return (
        "group string, status string, train_rows long, test_rows long, run_id string, model_uri string, "
        f"{metrics}, fit_seconds double, error string"
    )


@dataclass(frozen=True)
class PerGroupParams:
    """The `train_per_group` entry point's parameters."""

    data_path: str = parameters.data_path()
    label_col: str = parameters.label_col()
    task: str = parameters.task()
    features: str = parameters.features()
    exclude: str = parameters.exclude()
    impute: str = sklearn_forest.forest_param("impute")
    group_col: str = param("neighbourhood_cleansed", "String column: one model per value.")
    min_rows: int = param(50, "Groups with fewer training rows are skipped (listed; the fallback model scores them).")
    model_type: str = sklearn_forest.forest_param("model_type")
    num_trees: int = sklearn_forest.forest_param("num_trees")
    max_depth: int = sklearn_forest.forest_param("max_depth")
    min_samples_leaf: int = sklearn_forest.forest_param("min_samples_leaf")
    max_features: str = sklearn_forest.forest_param("max_features")
    seed: int = param(42, "Seed of the split and the models.")
    train_fraction: float = parameters.train_fraction()

    def forest_params(self) -> sklearn_forest.ForestParams:
        # every forest setting but log_label (group models fit the label itself)
        settings = {f.name: getattr(self, f.name) for f in fields(sklearn_forest.ForestParams) if f.name != "log_label"}
        return sklearn_forest.ForestParams(**settings)

    def validate(self) -> PerGroupParams:
        if not self.group_col:
            raise UserInputError("group_col is empty: pass -P group_col=<string column>, e.g. neighbourhood_cleansed.")
        if self.group_col == self.label_col:
            raise UserInputError(f"group_col and label_col are both '{self.label_col}': group by a string column.")
        if self.min_rows < 2:
            raise UserInputError(f"min_rows must be >= 2 (a model needs rows to fit), got {self.min_rows}.")
        self.forest_params().validate()
        choices.check("task", self.task, data_schema.TASKS)
        splits.check_training_inputs(self.label_col, self.train_fraction, self.data_path)
        return self

    def column_choice(self) -> data_schema.ColumnChoice:
        return data_schema.chosen_columns(self.task, self.features, self.exclude)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GroupContext:
    """What every group's task needs: small and picklable (shipped inside the function)."""

    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    group_col: str
    spec: data_schema.FeatureSpec
    forest: sklearn_forest.ForestParams
    min_rows: int
    seed: int


def train_group(context: GroupContext, frame):
    """applyInPandas function: fit, evaluate and log one group's model in a nested run; one result row."""
    import pandas as pd

    group = group_value(frame, context.group_col)
    spec = context.spec
    train = sklearn_forest.stable_order(frame.loc[frame[SPLIT_COL] == "train", spec.feature_cols + [spec.label_col]])
    test = sklearn_forest.stable_order(frame.loc[frame[SPLIT_COL] == "test", spec.feature_cols + [spec.label_col]])
    row = {
        "group": group,
        "status": "skipped",
        "train_rows": len(train),
        "test_rows": len(test),
        "run_id": None,
        "model_uri": None,
        **dict.fromkeys(GROUP_METRICS[spec.task]),
        "fit_seconds": None,
        "error": None,
    }
    if group is None or len(train) < context.min_rows:
        return pd.DataFrame([row])
    if spec.is_classifier and train[spec.label_col].nunique() < 2:
        # nothing to tell apart: the fallback model scores the group's rows
        row["error"] = f"one class only ({train[spec.label_col].iloc[0]}): scored by the fallback model"
        return pd.DataFrame([row])
    tracking.set_tracking_uri(context.tracking_uri)
    tags = {"group_col": context.group_col, "group": group, "entry_point": "train_per_group"}
    try:
        with tracking.child_run(
            context.parent_run_id, context.experiment_id, f"group-{group}", tags, context.tracking_uri
        ) as child:
            row["run_id"] = child.run_id
            child.log_params(
                {**context.forest.as_dict(), "group_col": context.group_col, "group": group, "seed": context.seed}
            )
            started = time.perf_counter()
            model = sklearn_forest.build_forest(spec, context.forest, context.seed, n_jobs=1)
            model.fit(train[spec.feature_cols], sklearn_forest.label_array(train[spec.label_col], spec))
            row["fit_seconds"] = time.perf_counter() - started
            metrics = {"train_rows": len(train), "test_rows": len(test), "fit_seconds": row["fit_seconds"]}
            if len(test):
                x_test, y_test = test[spec.feature_cols], sklearn_forest.label_array(test[spec.label_col], spec)
                answered = sklearn_forest.answers(model, x_test, spec)
                scores = sklearn_forest.answer_metrics(spec, y_test, answered)
                scores = {name: scores[name] for name in GROUP_METRICS[spec.task]}
                row.update(scores)
                metrics.update({k: v for k, v in scores.items() if math.isfinite(v)})
            child.log_metrics(metrics)
            # the data's classes, not the group's: every model's probabilities have the same columns
            info = mlflow_models.log_sklearn_model(
                model, train[spec.feature_cols], run_id=child.run_id, metadata=sklearn_forest.model_metadata(spec)
            )
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

    if params.data_path:
        check_group_col(validation.read_dataset(spark, params.data_path), params.group_col)
    prepared = splits.prepare_for_training(spark, params)
    try:
        check_group_col(prepared.train_df, params.group_col)
        spec = group_spec(prepared.spec, params.group_col)
        context = GroupContext(
            tracking.active_run_id(),
            tracking.experiment_id(),
            tracking.portable_tracking_uri(),
            params.group_col,
            spec,
            params.forest_params(),
            params.min_rows,
            params.seed,
        )
        tracking.set_tags({"group_col": params.group_col})
        columns = [F.col(params.group_col), *sklearn_forest.feature_columns(spec), F.col(spec.label_col)]
        both = (
            prepared.train_df.select(*columns)
            .withColumn(SPLIT_COL, F.lit("train"))
            .unionByName(prepared.test_df.select(*columns).withColumn(SPLIT_COL, F.lit("test")))
        )
        sizes = group_sizes(both, params.group_col)
        trainable = sorted(g for g, (n, _) in sizes.items() if g is not None and n >= params.min_rows)
        skipped = [g for g in sorted(sizes, key=lambda g: (g is None, str(g))) if g not in set(trainable)]
        if not trainable:
            raise UserInputError(
                f"no group of '{params.group_col}' has {params.min_rows} training rows: lower "
                "-P min_rows or group by a column with fewer, larger groups."
            )
        if skipped:
            tracking.set_tags({"skipped_groups": listed(skipped, 200)[:5000]})
            print(
                f"train_per_group: skipped {len(skipped)} groups with fewer than {params.min_rows} training rows "
                f"(their rows use the fallback model): {listed(skipped)}",
                flush=True,
            )
        ship_package(spark)  # train_group lives in this package
        started = time.perf_counter()
        # One task per few groups, not what adaptive execution would coalesce a small shuffle into: the
        # work here is the fits, not the bytes shuffled.
        tasks = min(len(trainable), 4 * spark.sparkContext.defaultParallelism)
        with session_conf(
            spark,
            {"spark.sql.shuffle.partitions": str(tasks), "spark.sql.adaptive.coalescePartitions.enabled": "false"},
        ):
            fitted = (
                both.filter(F.col(params.group_col).isin(trainable))
                .groupBy(params.group_col)
                .applyInPandas(functools.partial(train_group, context), result_schema(spec.task))
                .toPandas()
            )
        groups_seconds = time.perf_counter() - started
        table = fitted.sort_values("group", ignore_index=True)
        if skipped:
            skipped_rows = pd.DataFrame(
                [
                    {"group": g, "status": "skipped", "train_rows": sizes[g][0], "test_rows": sizes[g][1]}
                    for g in skipped
                ],
                columns=fitted.columns,
            )
            table = pd.concat([table, skipped_rows.astype(fitted.dtypes.to_dict())], ignore_index=True)
        tracking.log_dataframe_csv(table, GROUP_TABLE)
        trained, failed = table[table["status"] == "trained"], table[table["status"] == "failed"]
        one_class = table[(table["status"] == "skipped") & table["error"].notna()]
        if len(one_class):
            print(
                f"train_per_group: skipped {len(one_class)} groups with one class (their rows use the fallback "
                f"model): {listed(list(one_class['group']))}",
                flush=True,
            )
        tracking.log_metrics(
            {
                "groups_trained": len(trained),
                "groups_skipped": len(skipped) + len(one_class),
                "groups_failed": len(failed),
                "groups_seconds": groups_seconds,
            }
        )
        if len(failed):
            first = failed.iloc[0]
            raise RuntimeError(
                f"{len(failed)} of {len(trainable)} group models failed (their nested runs are FAILED "
                f"with the error); first, group '{first['group']}': {first['error']}"
            )

        # The fallback model: every training row, the group column as a feature.
        fallback = sklearn_forest.build_forest(prepared.spec, params.forest_params(), params.seed, n_jobs=-1)
        fallback_metrics, fallback_uri = fit_evaluate_log(prepared, fallback, prefix="fallback_", name=FALLBACK_MODEL)

        group_models = GroupModels(params.group_col, dict(zip(trained["group"], trained["model_uri"])), fallback_uri)
        scored = score_groups(
            spark,
            prepared.test_df,
            group_models,
            "fallback",
            resolve.resolve_model(fallback_uri, require_flavor="python_function"),
        )
        metrics = _metrics_of_scores(scored, spec)
        tracking.log_metrics(metrics)
        return PerGroupResult(table, metrics, fallback_metrics, context.parent_run_id)
    finally:
        prepared.unpersist()


def _metrics_of_scores(scored, spec: data_schema.FeatureSpec) -> dict[str, float]:
    """The task's metrics of score_groups' output on the cluster, as train computes them: a classifier's
    label and prediction as indices of spec.classes, its probabilities as a vector."""
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    if not spec.is_classifier:
        return model_metrics.regression_metrics(scored, spec.label_col)
    classes = F.array(*[F.lit(c) for c in spec.classes])
    indexed = scored.select(
        (F.array_position(classes, F.col(spec.label_col)) - 1).cast("double").alias("__label_index"),
        (F.array_position(classes, F.col("prediction")) - 1).cast("double").alias("__prediction_index"),
        array_to_vector("probability").alias("probability"),
    )
    return model_metrics.classification_metrics(indexed, len(spec.classes))


def _report(params: PerGroupParams, result: PerGroupResult) -> str:
    trained = int((result.table["status"] == "trained").sum())
    return (
        f"train_per_group: {trained} group models, {len(result.table) - trained} skipped; test "
        f"{model_metrics.headline(result.metrics)} (fallback alone: {model_metrics.headline(result.fallback_metrics)}) "
        f"run_id={result.run_id}"
    )


TRAIN_PER_GROUP = EntryPoint(
    name="train_per_group",
    script="train_per_group.py",
    summary="Train one model per group and a fallback model.",
    params=PerGroupParams,
    job=lambda spark, params, checked: train_per_group_and_log(spark, checked),
    run_name=lambda p: f"train_per_group {p.model_type} by {p.group_col}",
    report=_report,
    needs_spark_context="addPyFile for the per-group function",
)
