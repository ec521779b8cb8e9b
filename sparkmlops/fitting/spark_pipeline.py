"""The book's random-forest price model as a Spark ML pipeline, trained, evaluated and logged in one run; the
same pipeline classifies when the label is a class (see docs/your-data.md).

[SQLTransformer: __missing__<col> = 1.0 where a numeric column is null or NaN (the feature <col>_na), for the
columns with missing values in the data train read; booleans as 0/1 doubles; <col>__category =
COALESCE(<col>, '__null__') for the string columns with nulls in that data]
-> Imputer(numeric columns -> <col>__imputed; strategy = impute)
-> string columns (or their __category copies) -> StringIndexer(handleInvalid="keep")
-> VectorAssembler(indexed + imputed numeric and boolean + indicator columns)
-> RandomForestRegressor(numTrees, maxDepth, maxBins, minInstancesPerNode, featureSubsetStrategy, seed)
(or, with model_type=gbt, GBTRegressor with maxIter=num_trees and the same tree parameters; with
model_type=xgboost, xgboost.spark.SparkXGBRegressor with n_estimators=num_trees, max_depth, max_bin=maxBins,
min_child_weight=minInstancesPerNode), split with randomSplit([f, 1 - f], seed). With ``log_label`` the forest
learns log1p(label) and a last
SQLTransformer stage maps its output back with expm1, so the logged model still predicts the label itself.
With model_type=linear: one-hot categories -> LinearRegression / LogisticRegression.

A classifier learns the class index of the label (classes in spec.classes' order, indexed outside the pipeline)
and ends with IndexToString + a SQL cast, so its ``prediction`` is the label's own value ("Adelie", true, 1);
``probability`` holds one probability per class, in the same order.
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
from sparkmlops.fitting.metrics import classification_metrics, regression_metrics

MAX_DEPTH_LIMIT = 30  # Spark's own limit for tree depth
PLOT_SAMPLE_ROWS = 5000
FEATURE_SUBSET_STRATEGIES = ("auto", "all", "onethird", "sqrt", "log2")
MODEL_TYPES = {
    "rf": "random forest, the book's",
    "gbt": "Spark's gradient-boosted trees, num_trees = iterations (classification: two classes only)",
    "xgboost": "xgboost.spark, num_trees = boosting rounds",
    "linear": "linear or logistic regression on one-hot categories: the baseline to fit first",
}
LOG_LABEL_COL = "__log_label"
LOG_PREDICTION_COL = "__log_prediction"
LABEL_STRING_COL = "__label_string"
LABEL_INDEX_COL = "__label_index"
PREDICTION_INDEX_COL = "__prediction_index"
PREDICTED_LABEL_COL = "__predicted_label"
PROBABILITY_COL = "probability"
MISSING_SUFFIX = "_na"  # the indicator's name as users see it (feature importance), the book's *_na
MISSING_PREFIX = "__missing__"  # its column inside the pipeline: scoring data may carry a <col>_na of its own
BOOLEAN_SUFFIX = "__as_double"
IMPUTED_SUFFIX = "__imputed"  # the Imputer writes new columns: transform() leaves the input's own values alone
# A string feature with nulls in training: null is a category of its own (the StringIndexer learns it), not
# the bucket of categories never seen. Its indexer reads COALESCE(<col>, NULL_CATEGORY) AS <col>__category.
NULL_CATEGORY = "__null__"
CATEGORY_SUFFIX = "__category"


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
    task: str = parameters.task()
    features: str = parameters.features()
    exclude: str = parameters.exclude()
    impute: str = parameters.impute()
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
        choices.check("task", self.task, data_schema.TASKS)
        choices.check("impute", self.impute, parameters.IMPUTE)
        if self.task == "classification" and self.log_label:
            raise UserInputError("log_label applies to regression: a class label has no logarithm; drop -P log_label.")
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

    def column_choice(self) -> data_schema.ColumnChoice:
        return data_schema.chosen_columns(self.task, self.features, self.exclude)


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


def indicator_cols(spec: data_schema.FeatureSpec) -> list[str]:
    """The missing-value indicators the pipeline adds: one per column that had missing values in training,
    unless the data has a column of that name already (the book's cleaned data carries its own *_na flags)."""
    taken = set(spec.feature_cols + spec.ignored_cols + list(spec.left_out) + [spec.label_col])
    return [c for c in spec.missing_cols if f"{c}{MISSING_SUFFIX}" not in taken]


def prepare_statement(spec: data_schema.FeatureSpec) -> str:
    """The SQL of the pipeline's first stage: indicators of missing values, booleans as 0/1 doubles, null as a
    category of the string features that had nulls in training."""
    made = [f"CAST((`{c}` IS NULL OR isnan(`{c}`)) AS DOUBLE) AS `{MISSING_PREFIX}{c}`" for c in indicator_cols(spec)]
    made += [f"CAST(`{c}` AS DOUBLE) AS `{c}{BOOLEAN_SUFFIX}`" for c in spec.boolean_cols]
    made += [f"COALESCE(`{c}`, '{NULL_CATEGORY}') AS `{c}{CATEGORY_SUFFIX}`" for c in spec.null_category_cols]
    return f"SELECT *, {', '.join(made)} FROM __THIS__" if made else ""


def indexer_inputs(spec: data_schema.FeatureSpec) -> list[str]:
    """The column each string feature's index is learnt from: the feature, or its null-as-category copy."""
    return [f"{c}{CATEGORY_SUFFIX}" if c in spec.null_category_cols else c for c in spec.categorical_cols]


def assembled_features(spec: data_schema.FeatureSpec) -> list[str]:
    """The model's features as the user knows them, in the order the VectorAssembler puts them."""
    return (
        spec.categorical_cols
        + spec.numeric_cols
        + spec.boolean_cols
        + [f"{c}{MISSING_SUFFIX}" for c in indicator_cols(spec)]
    )


def label_strings(spec: data_schema.FeatureSpec) -> list[str]:
    """The classes as Spark casts the label to string (true/false, 1, "Adelie"): the label indexer's labels."""
    return [("true" if c else "false") if isinstance(c, bool) else str(c) for c in spec.classes]


def index_label(df, spec: data_schema.FeatureSpec):
    """``df`` plus the class index of its label (LABEL_INDEX_COL), in spec.classes' order."""
    from pyspark.ml.feature import StringIndexerModel
    from pyspark.sql import functions as F

    indexer = StringIndexerModel.from_labels(
        label_strings(spec), inputCol=LABEL_STRING_COL, outputCol=LABEL_INDEX_COL, handleInvalid="error"
    )
    return indexer.transform(df.withColumn(LABEL_STRING_COL, F.col(spec.label_col).cast("string")))


def _estimator(spec: data_schema.FeatureSpec, params: PipelineParams, label_col: str, prediction_col: str):
    from pyspark.ml import classification, regression

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
    classify = spec.is_classifier
    if params.model_type == "xgboost":
        from xgboost.spark import SparkXGBClassifier, SparkXGBRegressor

        xgb_params = dict(
            features_col="features",
            label_col=label_col,
            prediction_col=prediction_col,
            n_estimators=params.num_trees,
            max_depth=params.max_depth,
            max_bin=params.max_bins,
            min_child_weight=float(params.min_instances_per_node),
            random_state=params.seed,
            # One worker: the same trees whatever the cluster (XGBoost's distributed sketch depends on it).
            num_workers=1,
            verbosity=0,
        )
        if classify:
            return SparkXGBClassifier(
                probability_col=PROBABILITY_COL, raw_prediction_col="__raw_prediction", **xgb_params
            )
        return SparkXGBRegressor(**xgb_params)
    if params.model_type == "linear":
        if classify:
            return classification.LogisticRegression(
                featuresCol="features",
                labelCol=label_col,
                predictionCol=prediction_col,
                probabilityCol=PROBABILITY_COL,
                rawPredictionCol="__raw_prediction",
            )
        return regression.LinearRegression(featuresCol="features", labelCol=label_col, predictionCol=prediction_col)
    if params.model_type == "gbt":
        gbt = classification.GBTClassifier if classify else regression.GBTRegressor
        estimator = gbt(maxIter=params.num_trees, **tree_params)
    else:
        forest = classification.RandomForestClassifier if classify else regression.RandomForestRegressor
        estimator = forest(numTrees=params.num_trees, **tree_params)
    if classify:  # set, not passed: PySpark's GBTClassifier does not take them as keywords
        estimator.setProbabilityCol(PROBABILITY_COL).setRawPredictionCol("__raw_prediction")
    return estimator


def build_pipeline(spec: data_schema.FeatureSpec, params: PipelineParams):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import Imputer, IndexToString, OneHotEncoder, SQLTransformer, StringIndexer, VectorAssembler

    stages = []
    statement = prepare_statement(spec)
    if statement:
        stages.append(SQLTransformer(statement=statement))
    # Every numeric feature is imputed, not only those with missing values in training: scoring data may
    # miss what training did not.
    numbers = spec.numeric_cols + [f"{c}{BOOLEAN_SUFFIX}" for c in spec.boolean_cols]
    imputed = [f"{c}{IMPUTED_SUFFIX}" for c in numbers]
    if numbers:
        stages.append(Imputer(inputCols=numbers, outputCols=imputed, strategy=params.impute))
    index_cols = [f"{c}_index" for c in spec.categorical_cols]
    if spec.categorical_cols:
        # "keep": categories unseen in training (and nulls, where training had none) get one more index
        # instead of failing.
        stages.append(StringIndexer(inputCols=indexer_inputs(spec), outputCols=index_cols, handleInvalid="keep"))
    if params.model_type == "linear" and spec.categorical_cols:
        onehot_cols = [f"{c}_onehot" for c in spec.categorical_cols]
        stages.append(OneHotEncoder(inputCols=index_cols, outputCols=onehot_cols, handleInvalid="keep"))
        index_cols = onehot_cols
    assembled = index_cols + imputed + [f"{MISSING_PREFIX}{c}" for c in indicator_cols(spec)]
    stages.append(VectorAssembler(inputCols=assembled, outputCol="features"))
    if spec.is_classifier:
        label_col, prediction_col = LABEL_INDEX_COL, PREDICTION_INDEX_COL
    elif params.log_label:
        label_col, prediction_col = LOG_LABEL_COL, LOG_PREDICTION_COL
    else:
        label_col, prediction_col = spec.label_col, "prediction"
    stages.append(_estimator(spec, params, label_col, prediction_col))
    if spec.is_classifier:
        # The class back in the label's own values and type, so every scorer writes "Adelie", true or 1.
        stages.append(
            IndexToString(inputCol=PREDICTION_INDEX_COL, outputCol=PREDICTED_LABEL_COL, labels=label_strings(spec))
        )
        stages.append(
            SQLTransformer(
                statement=f"SELECT *, CAST({PREDICTED_LABEL_COL} AS {spec.label_type}) AS prediction FROM __THIS__"
            )
        )
    if params.log_label:
        # Part of the model, so scoring it anywhere (score_batch, pyfunc) gives the label's own scale.
        stages.append(SQLTransformer(statement=f"SELECT *, expm1({LOG_PREDICTION_COL}) AS prediction FROM __THIS__"))
    return Pipeline(stages=stages)


def check_task(spec: data_schema.FeatureSpec, params: PipelineParams) -> None:
    """What the model family cannot do with this label, said before anything is fitted."""
    if spec.is_classifier and params.log_label:
        raise UserInputError("log_label applies to regression: a class label has no logarithm; drop -P log_label.")
    if spec.is_classifier and params.model_type == "gbt" and len(spec.classes) > 2:
        raise UserInputError(
            f"model_type=gbt classifies two classes only (MLlib's GBTClassifier), and '{spec.label_col}' has "
            f"{len(spec.classes)}: pass -P model_type=rf, xgboost or linear."
        )


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
    StringIndexer has counted the categories, before the model is fitted."""
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import StringIndexer
    from pyspark.sql import functions as F

    check_task(spec, params)
    if spec.is_classifier:
        train_df = index_label(train_df, spec)
    elif params.log_label:
        train_df = train_df.withColumn(LOG_LABEL_COL, F.log1p(F.col(spec.label_col)))
    if spec.is_classifier and params.model_type == "xgboost":
        check_every_class_in(train_df, spec)
    stages = build_pipeline(spec, params).getStages()
    at = next((i for i, stage in enumerate(stages) if isinstance(stage, StringIndexer)), None)
    if at is None or params.model_type == "linear":  # one-hot: any number of categories
        return Pipeline(stages=stages).fit(train_df)
    before = Pipeline(stages=stages[:at]).fit(train_df)
    indexer = stages[at].fit(before.transform(train_df))
    check_category_bins(dict(zip(spec.categorical_cols, map(len, indexer.labelsArray))), params)
    rest = Pipeline(stages=stages[at + 1 :]).fit(indexer.transform(before.transform(train_df)))
    return PipelineModel(stages=[*before.stages, indexer, *rest.stages])


def check_every_class_in(train_df, spec: data_schema.FeatureSpec) -> None:
    """xgboost.spark counts the classes of the rows it is given: a class absent from the training split would
    shift every probability's position (MLlib's models take the count from the label's index instead)."""
    seen = {row[0] for row in train_df.select(LABEL_INDEX_COL).distinct().collect()}
    absent = [str(c) for i, c in enumerate(spec.classes) if float(i) not in seen]
    if absent:
        raise UserInputError(
            f"class(es) {', '.join(absent)} of '{spec.label_col}' have no rows in the training split, which "
            "model_type=xgboost needs: pass another -P seed or a larger train_fraction, or use model_type=rf."
        )


def forest_of(model):
    """The pipeline's tree model stage (Spark forest/GBT, or the XGBoost model); None for a linear model."""
    return next(
        (
            stage
            for stage in reversed(model.stages)
            if hasattr(stage, "featureImportances") or hasattr(stage, "get_booster")
        ),
        None,
    )


def feature_importance_table(model, spec: data_schema.FeatureSpec):
    """(feature, importance) with the original column names, most important first; None for a linear model."""
    import pandas as pd

    names = assembled_features(spec)  # order of the VectorAssembler inputs
    stage = forest_of(model)
    if stage is None:
        return None
    if hasattr(stage, "featureImportances"):
        values = stage.featureImportances.toArray()
    else:  # XGBoost: total gain per feature, normalised to sum to 1 as Spark's importances do
        gain = stage.get_booster().get_score(importance_type="total_gain")
        raw = [gain.get(f"f{i}", 0.0) for i in range(len(names))]
        values = [v / sum(raw) if sum(raw) else 0.0 for v in raw]
    table = pd.DataFrame({"feature": names, "importance": values})
    return table.sort_values(["importance", "feature"], ascending=[False, True]).reset_index(drop=True)


def model_metadata(spec: data_schema.FeatureSpec) -> dict:
    """What every consumer of the logged model reads from its MLmodel file: the task, the classes in the order
    of ``probability``, and whether missing values are imputed inside the model."""
    metadata = {"task": spec.task, "label_col": spec.label_col, "label_type": spec.label_type, "imputes_missing": True}
    if spec.is_classifier:
        metadata.update(
            classes=[c.item() if hasattr(c, "item") else c for c in spec.classes], probability_column=PROBABILITY_COL
        )
    return metadata


def evaluate(model, test_df, spec: data_schema.FeatureSpec) -> tuple[dict[str, float], object]:
    """The task's metrics on the test split, and the cached predictions they were measured on."""
    if spec.is_classifier:
        predictions = (
            model.transform(index_label(test_df, spec))
            .select(spec.label_col, "prediction", LABEL_INDEX_COL, PREDICTION_INDEX_COL, PROBABILITY_COL)
            .cache()
        )
        return classification_metrics(predictions, len(spec.classes)), predictions
    predictions = model.transform(test_df).select(spec.label_col, "prediction").cache()
    return regression_metrics(predictions, spec.label_col), predictions


def log_figures(model, predictions, spec: data_schema.FeatureSpec, test_rows: int):
    """The run's figures by task: feature importance (trees), predicted vs actual (regression), confusion
    matrix and, for two classes, ROC and PR curves (classification), each on a bounded sample."""
    importance = feature_importance_table(model, spec)
    if importance is not None:
        tracking.log_dataframe_csv(importance, "feature_importance.csv")
        fig = plots.feature_importance_figure(importance)
        tracking.log_figure(fig, "feature_importance.png")
        plots.close(fig)
    if spec.is_classifier:
        counts = predictions.groupBy(LABEL_INDEX_COL, PREDICTION_INDEX_COL).count().collect()
        fig = plots.confusion_matrix_figure(counts, [str(c) for c in spec.classes], spec.label_col)
        tracking.log_figure(fig, "confusion_matrix.png")
        plots.close(fig)
        if len(spec.classes) == 2:
            from pyspark.ml.functions import vector_to_array

            sample = _plot_sample(
                predictions.select(LABEL_INDEX_COL, vector_to_array(PROBABILITY_COL)[1].alias("score")), test_rows
            )
            for name, fig in plots.binary_curve_figures(
                sample[LABEL_INDEX_COL], sample["score"], str(spec.classes[1])
            ).items():
                tracking.log_figure(fig, name)
                plots.close(fig)
    else:
        sample = _plot_sample(predictions, test_rows)
        fig = plots.predicted_vs_actual_figure(sample[spec.label_col], sample["prediction"], spec.label_col)
        tracking.log_figure(fig, "predicted_vs_actual.png")
        plots.close(fig)
    return importance


def fit_evaluate_log(prepared: PreparedData, params: PipelineParams) -> TrainResult:
    """Fit on the training split, evaluate on the test split, log metrics, figures and the model."""
    spec = prepared.spec
    if params.log_label:
        check_log_label(prepared.profile, spec)
    started = time.perf_counter()
    model = fit_pipeline(prepared.train_df, spec, params)
    fit_seconds = time.perf_counter() - started

    metrics, predictions = evaluate(model, prepared.test_df, spec)
    importance = log_figures(model, predictions, spec, prepared.test_rows)

    extra_packages = ("xgboost-cpu",) if params.model_type == "xgboost" else ()
    info = mlflow_models.log_spark_model(
        model,
        prepared.test_df.select(*spec.feature_cols),
        predictions.select("prediction"),
        extra_packages=extra_packages,
        metadata=model_metadata(spec),
    )
    # Test metrics linked to the logged model and the test split they were measured on.
    tracking.log_metrics(metrics, model_id=info.model_id, dataset=prepared.datasets.get("test"))
    tracking.log_metrics({"fit_seconds": fit_seconds}, model_id=info.model_id)
    if params.model_type == "xgboost":
        # The native booster, loadable with xgboost.Booster(model_file=...) in plain Python (features in
        # the order of feature_names.json, categories as train's StringIndexer indices).
        mlflow_models.log_xgboost_booster(forest_of(model).get_booster(), names=assembled_features(spec))
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
