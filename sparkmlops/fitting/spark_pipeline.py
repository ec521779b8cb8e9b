"""The book's random-forest price model as a Spark ML pipeline, trained, evaluated and logged in one run.

string columns -> StringIndexer(handleInvalid="keep") -> VectorAssembler(indexed + numeric columns)
-> RandomForestRegressor(numTrees, maxDepth, maxBins, minInstancesPerNode, featureSubsetStrategy, seed)
(or, with model_type=gbt, GBTRegressor with maxIter=num_trees and the same tree parameters; with
model_type=xgboost, xgboost.spark.SparkXGBRegressor with n_estimators=num_trees, max_depth, max_bin=maxBins,
min_child_weight=minInstancesPerNode), split with randomSplit([f, 1 - f], seed). With ``log_label`` the forest
learns log1p(label) and a last
SQLTransformer stage maps its output back with expm1, so the logged model still predicts the label itself.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

from sparkmlops.core import choices, mlflow_models, plots, tracking
from sparkmlops.core.entry_points import param
from sparkmlops.core.errors import UserInputError
from sparkmlops.data import parameters
from sparkmlops.data import schema as data_schema
from sparkmlops.data.splits import PreparedData
from sparkmlops.fitting.metrics import regression_metrics

MAX_DEPTH_LIMIT = 30  # Spark's own limit for tree depth
PLOT_SAMPLE_ROWS = 5000
FEATURE_SUBSET_STRATEGIES = ("auto", "all", "onethird", "sqrt", "log2")
MODEL_TYPES = {
    "rf": "random forest, the book's",
    "gbt": "Spark's gradient-boosted trees, num_trees = iterations",
    "xgboost": "xgboost.spark, num_trees = boosting rounds",
}
LOG_LABEL_COL = "__log_label"
LOG_PREDICTION_COL = "__log_prediction"


def check_feature_subset_strategy(value: str) -> str:
    """Spark's featureSubsetStrategy: a name, a fraction in (0, 1] or a number of features >= 1."""
    if value in FEATURE_SUBSET_STRATEGIES:
        return value
    if re.fullmatch(r"[1-9][0-9]*", value):
        return value
    if re.fullmatch(r"0?\.[0-9]+|1\.0*", value) and 0.0 < float(value) <= 1.0:
        return value
    raise UserInputError(
        f"feature_subset_strategy '{value}' is not valid: use one of "
        f"{', '.join(FEATURE_SUBSET_STRATEGIES)}, a fraction in (0, 1] such as 0.5, "
        "or a number of features such as 8."
    )


@dataclass(frozen=True)
class PipelineParams:
    """The pipeline's settings, as parameters: the model part of `train`'s (sparkmlops.train.train.TrainParams
    adds where the data comes from and where the model goes), and what the searches vary."""

    label_col: str = parameters.label_col()
    model_type: str = param("rf", "", choices=MODEL_TYPES)
    num_trees: int = param(100, "Trees, or boosting rounds for gbt and xgboost.")
    max_depth: int = param(5, "0 to 30.")
    max_bins: int = param(40, ">= categories of any string column + 1.")
    min_instances_per_node: int = param(1, "Fewest training rows in a leaf.")
    feature_subset_strategy: str = param(
        "auto", "auto, all, onethird, sqrt, log2, a fraction such as 0.5, or a number of features."
    )
    log_label: bool = param(False, "Fit log1p(label); the model still predicts the label (expm1 inside the pipeline).")
    seed: int = param(42, "Seed of the split and the forest.")

    def validate(self) -> PipelineParams:
        """Checks of the settings alone; raise one clear line per problem, before Spark starts."""
        choices.check("model_type", self.model_type, MODEL_TYPES)
        if self.model_type == "xgboost" and self.feature_subset_strategy not in ("auto", "all"):
            raise UserInputError(
                "feature_subset_strategy applies to rf and gbt: XGBoost uses every feature here; "
                "pass -P feature_subset_strategy=auto with model_type=xgboost."
            )
        if self.num_trees < 1:
            raise UserInputError(f"num_trees must be >= 1, got {self.num_trees}.")
        if not 0 <= self.max_depth <= MAX_DEPTH_LIMIT:
            raise UserInputError(
                f"max_depth must be between 0 and {MAX_DEPTH_LIMIT} (Spark's limit), got {self.max_depth}."
            )
        if self.max_bins < 2:
            raise UserInputError(f"max_bins must be >= 2, got {self.max_bins}.")
        if self.min_instances_per_node < 1:
            raise UserInputError(f"min_instances_per_node must be >= 1, got {self.min_instances_per_node}.")
        check_feature_subset_strategy(self.feature_subset_strategy)
        return self

    def with_model_params(self, **model_params) -> PipelineParams:
        return replace(self, **model_params)


@dataclass
class TrainResult:
    model: object
    metrics: dict[str, float]
    spec: data_schema.FeatureSpec
    data_path: str
    feature_importance: object = None  # pandas frame (feature, importance)
    digests: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    model_uri: str = ""  # the logged model (models:/m-...)
    registered_version: str = ""


def build_pipeline(spec: data_schema.FeatureSpec, params: PipelineParams):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import SQLTransformer, StringIndexer, VectorAssembler
    from pyspark.ml.regression import GBTRegressor, RandomForestRegressor

    stages = []
    index_cols = [f"{c}_index" for c in spec.categorical_cols]
    if spec.categorical_cols:
        # "keep": categories unseen in training (and nulls) get their own index instead of failing.
        stages.append(StringIndexer(inputCols=spec.categorical_cols, outputCols=index_cols, handleInvalid="keep"))
    stages.append(VectorAssembler(inputCols=index_cols + spec.numeric_cols, outputCol="features"))
    label_col, prediction_col = (
        (LOG_LABEL_COL, LOG_PREDICTION_COL) if params.log_label else (spec.label_col, "prediction")
    )
    tree_params = dict(
        featuresCol="features",
        labelCol=label_col,
        predictionCol=prediction_col,
        maxDepth=params.max_depth,
        maxBins=params.max_bins,
        minInstancesPerNode=params.min_instances_per_node,
        featureSubsetStrategy=params.feature_subset_strategy,
        seed=params.seed,
        # Same trees, but instances keep their node ids instead of re-sending the growing forest to the
        # executors at every level: a depth-14 forest on the real data fits in 19 s instead of 50 s.
        cacheNodeIds=True,
    )
    if params.model_type == "xgboost":
        from xgboost.spark import SparkXGBRegressor

        # One worker: the same trees whatever the cluster (XGBoost's distributed sketch depends on it).
        stages.append(
            SparkXGBRegressor(
                features_col="features",
                label_col=label_col,
                prediction_col=prediction_col,
                n_estimators=params.num_trees,
                max_depth=params.max_depth,
                max_bin=params.max_bins,
                min_child_weight=float(params.min_instances_per_node),
                random_state=params.seed,
                num_workers=1,
                verbosity=0,
            )
        )
    elif params.model_type == "gbt":
        stages.append(GBTRegressor(maxIter=params.num_trees, **tree_params))
    else:
        stages.append(RandomForestRegressor(numTrees=params.num_trees, **tree_params))
    if params.log_label:
        # Part of the model, so scoring it anywhere (score_batch, pyfunc) gives the label's own scale.
        stages.append(SQLTransformer(statement=f"SELECT *, expm1({LOG_PREDICTION_COL}) AS prediction FROM __THIS__"))
    return Pipeline(stages=stages)


def check_log_label(profile: dict, spec: data_schema.FeatureSpec) -> None:
    if profile["label_min"] is not None and profile["label_min"] <= -1.0:
        raise UserInputError(
            f"log_label=true needs '{spec.label_col}' > -1 (log1p), but its minimum is "
            f"{profile['label_min']}: pass -P log_label=false."
        )


def check_category_bins(category_counts: dict[str, int], params: PipelineParams) -> None:
    """maxBins must cover every categorical feature, or Spark fails deep inside the forest's fit."""
    too_many = {c: k + 1 for c, k in category_counts.items() if k + 1 > params.max_bins}
    if too_many:
        worst = max(too_many.values())
        listed = ", ".join(f"{c} ({k - 1} categories)" for c, k in sorted(too_many.items()))
        raise UserInputError(
            f"max_bins={params.max_bins} is smaller than the number of categories of {listed}: "
            f"pass -P max_bins={worst} or more (one bin per category plus one for unseen "
            "values), or drop the column."
        )


def min_bins(category_counts: dict[str, int]) -> int:
    """The smallest maxBins the data allows: with handleInvalid="keep" k categories make k + 1 values."""
    return max([k + 1 for k in category_counts.values()] + [2])


def fit_pipeline(train_df, spec: data_schema.FeatureSpec, params: PipelineParams):
    """Fit ``build_pipeline`` stage by stage (as Pipeline.fit does), checking maxBins once the
    StringIndexer has counted the categories, before the forest is fitted."""
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.sql import functions as F

    if params.log_label:
        train_df = train_df.withColumn(LOG_LABEL_COL, F.log1p(F.col(spec.label_col)))
    stages = build_pipeline(spec, params).getStages()
    if not spec.categorical_cols:
        return Pipeline(stages=stages).fit(train_df)
    indexer = stages[0].fit(train_df)
    check_category_bins(dict(zip(spec.categorical_cols, map(len, indexer.labelsArray))), params)
    rest = Pipeline(stages=stages[1:]).fit(indexer.transform(train_df))
    return PipelineModel(stages=[indexer, *rest.stages])


def forest_of(model):
    """The pipeline's tree model stage (Spark forest/GBT, or the XGBoost model)."""
    return next(
        stage
        for stage in reversed(model.stages)
        if hasattr(stage, "featureImportances") or hasattr(stage, "get_booster")
    )


def feature_importance_table(model, spec: data_schema.FeatureSpec):
    """(feature, importance) with the original column names, most important first."""
    import pandas as pd

    names = spec.categorical_cols + spec.numeric_cols  # order of the VectorAssembler inputs
    stage = forest_of(model)
    if hasattr(stage, "featureImportances"):
        values = stage.featureImportances.toArray()
    else:  # XGBoost: total gain per feature, normalised to sum to 1 as Spark's importances do
        gain = stage.get_booster().get_score(importance_type="total_gain")
        raw = [gain.get(f"f{i}", 0.0) for i in range(len(names))]
        values = [v / sum(raw) if sum(raw) else 0.0 for v in raw]
    table = pd.DataFrame({"feature": names, "importance": values})
    return table.sort_values(["importance", "feature"], ascending=[False, True]).reset_index(drop=True)


def fit_evaluate_log(prepared: PreparedData, params: PipelineParams) -> TrainResult:
    """Fit on the training split, evaluate on the test split, log metrics, figures and the model."""
    spec = prepared.spec
    if params.log_label:
        check_log_label(prepared.profile, spec)
    started = time.perf_counter()
    model = fit_pipeline(prepared.train_df, spec, params)
    fit_seconds = time.perf_counter() - started

    predictions = model.transform(prepared.test_df).select(spec.label_col, "prediction").cache()
    metrics = regression_metrics(predictions, spec.label_col)

    importance = feature_importance_table(model, spec)
    tracking.log_dataframe_csv(importance, "feature_importance.csv")
    fig = plots.feature_importance_figure(importance)
    tracking.log_figure(fig, "feature_importance.png")
    plots.close(fig)
    sample = _plot_sample(predictions, prepared.test_rows)
    fig = plots.predicted_vs_actual_figure(sample[spec.label_col], sample["prediction"], spec.label_col)
    tracking.log_figure(fig, "predicted_vs_actual.png")
    plots.close(fig)

    extra_packages = ("xgboost-cpu",) if params.model_type == "xgboost" else ()
    info = mlflow_models.log_spark_model(
        model,
        prepared.test_df.select(*spec.feature_cols),
        predictions.select("prediction"),
        extra_packages=extra_packages,
    )
    # Test metrics linked to the logged model and the test split they were measured on.
    tracking.log_metrics(metrics, model_id=info.model_id, dataset=prepared.datasets.get("test"))
    tracking.log_metrics({"fit_seconds": fit_seconds}, model_id=info.model_id)
    if params.model_type == "xgboost":
        # The native booster, loadable with xgboost.Booster(model_file=...) in plain Python (features in
        # the order of feature_names.json, categories as train's StringIndexer indices).
        mlflow_models.log_xgboost_booster(
            forest_of(model).get_booster(), names=spec.categorical_cols + spec.numeric_cols
        )
    predictions.unpersist()
    return TrainResult(
        model=model,
        metrics=metrics,
        spec=spec,
        data_path=prepared.data_path,
        feature_importance=importance,
        digests=prepared.digests,
        run_id=tracking.active_run_id(),
        model_uri=info.model_uri,
    )


def _plot_sample(predictions, total: int):
    fraction = min(1.0, PLOT_SAMPLE_ROWS / total) if total else 1.0
    sampled = predictions if fraction >= 1.0 else predictions.sample(fraction=fraction, seed=0)
    return sampled.toPandas()
