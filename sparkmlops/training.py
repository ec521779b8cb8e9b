"""The book's random-forest price model as a Spark ML pipeline, trained, evaluated and logged in one run.

string columns -> StringIndexer(handleInvalid="keep") -> VectorAssembler(indexed + numeric columns)
-> RandomForestRegressor(numTrees, maxDepth, maxBins, seed), split with randomSplit([f, 1 - f], seed).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from sparkmlops import data as data_lib
from sparkmlops import plots, tracking
from sparkmlops.errors import UserInputError

MAX_DEPTH_LIMIT = 30  # Spark's own limit for tree depth
MIN_TRAIN_ROWS = 10
PLOT_SAMPLE_ROWS = 5000


@dataclass(frozen=True)
class TrainParams:
    """The `train` entry point's parameters (names match MLproject)."""

    data_path: str = ""
    label_col: str = data_lib.DEFAULT_LABEL
    num_trees: int = 100
    max_depth: int = 5
    max_bins: int = 40
    seed: int = 42
    train_fraction: float = 0.8

    def validate(self) -> "TrainParams":
        """Checks that need no data; raise one clear line per problem, before Spark starts."""
        if not self.label_col:
            raise UserInputError("label_col is empty: pass -P label_col=<numeric column>, e.g. price.")
        if self.num_trees < 1:
            raise UserInputError(f"num_trees must be >= 1, got {self.num_trees}.")
        if not 0 <= self.max_depth <= MAX_DEPTH_LIMIT:
            raise UserInputError(f"max_depth must be between 0 and {MAX_DEPTH_LIMIT} (Spark's limit), "
                                 f"got {self.max_depth}.")
        if self.max_bins < 2:
            raise UserInputError(f"max_bins must be >= 2, got {self.max_bins}.")
        if not 0.0 < self.train_fraction < 1.0:
            raise UserInputError(f"train_fraction must be strictly between 0 and 1 (the rest is the test "
                                 f"split), got {self.train_fraction}.")
        if self.data_path:
            data_lib.check_input_path(self.data_path)
        return self

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: object
    metrics: dict[str, float]
    spec: data_lib.FeatureSpec
    data_path: str
    feature_importance: object = None  # pandas frame (feature, importance)
    digests: dict[str, str] = field(default_factory=dict)
    run_id: str = ""


def build_pipeline(spec: data_lib.FeatureSpec, params: TrainParams):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StringIndexer, VectorAssembler
    from pyspark.ml.regression import RandomForestRegressor

    stages = []
    index_cols = [f"{c}_index" for c in spec.categorical_cols]
    if spec.categorical_cols:
        # "keep": categories unseen in training (and nulls) get their own index instead of failing.
        stages.append(StringIndexer(inputCols=spec.categorical_cols, outputCols=index_cols, handleInvalid="keep"))
    stages.append(VectorAssembler(inputCols=index_cols + spec.numeric_cols, outputCol="features"))
    stages.append(RandomForestRegressor(featuresCol="features", labelCol=spec.label_col, predictionCol="prediction",
                                        numTrees=params.num_trees, maxDepth=params.max_depth,
                                        maxBins=params.max_bins, seed=params.seed))
    return Pipeline(stages=stages)


def check_against_data(profile: dict, spec: data_lib.FeatureSpec) -> None:
    """Checks that need one pass over the data; Spark would fail cryptically later otherwise."""
    if profile["numeric_nulls"]:
        listed = ", ".join(f"{c} ({n})" for c, n in sorted(profile["numeric_nulls"].items()))
        raise UserInputError(f"numeric feature columns contain nulls: {listed}: impute them (as the book's "
                             "cleaned data does, with *_na flags) or drop those rows.")
    usable = profile["rows"] - profile["null_labels"]
    if usable < MIN_TRAIN_ROWS:
        raise UserInputError(f"only {usable} rows with a non-null '{spec.label_col}': need at least "
                             f"{MIN_TRAIN_ROWS} to split into train and test.")


def check_category_bins(category_counts: dict[str, int], params: TrainParams) -> None:
    """maxBins must cover every categorical feature, or Spark fails deep inside the forest's fit."""
    # With handleInvalid="keep" a column with k categories becomes a feature with k + 1 values.
    too_many = {c: k + 1 for c, k in category_counts.items() if k + 1 > params.max_bins}
    if too_many:
        worst = max(too_many.values())
        listed = ", ".join(f"{c} ({k - 1} categories)" for c, k in sorted(too_many.items()))
        raise UserInputError(f"max_bins={params.max_bins} is smaller than the number of categories of {listed}: "
                             f"pass -P max_bins={worst} or more (one bin per category plus one for unseen "
                             "values), or drop the column.")


def fit_pipeline(train_df, spec: data_lib.FeatureSpec, params: TrainParams):
    """Fit ``build_pipeline`` stage by stage (as Pipeline.fit does), checking maxBins once the
    StringIndexer has counted the categories, before the forest is fitted."""
    from pyspark.ml import Pipeline, PipelineModel

    stages = build_pipeline(spec, params).getStages()
    if not spec.categorical_cols:
        return Pipeline(stages=stages).fit(train_df)
    indexer = stages[0].fit(train_df)
    check_category_bins(dict(zip(spec.categorical_cols, map(len, indexer.labelsArray))), params)
    rest = Pipeline(stages=stages[1:]).fit(indexer.transform(train_df))
    return PipelineModel(stages=[indexer, *rest.stages])


def regression_metrics(predictions, label_col: str) -> dict[str, float]:
    """rmse, mae and r2 (as RegressionEvaluator defines them) in one pass."""
    from pyspark.sql import functions as F

    err = F.col("prediction") - F.col(label_col)
    row = predictions.agg(
        F.count(F.lit(1)).alias("n"), F.sum(err * err).alias("sse"), F.sum(F.abs(err)).alias("sae"),
        F.avg(F.col(label_col)).alias("mean"), F.var_pop(F.col(label_col)).alias("var"),
    ).first()
    n = row["n"]
    if not n:
        raise UserInputError("the test split is empty: use more data or a smaller train_fraction.")
    mse = row["sse"] / n
    r2 = 1.0 - mse / row["var"] if row["var"] else float("nan")
    return {"rmse": mse ** 0.5, "mae": row["sae"] / n, "r2": r2}


def feature_importance_table(model, spec: data_lib.FeatureSpec):
    """(feature, importance) with the original column names, most important first."""
    import pandas as pd

    forest = model.stages[-1]
    names = spec.categorical_cols + spec.numeric_cols  # order of the VectorAssembler inputs
    values = forest.featureImportances.toArray()
    table = pd.DataFrame({"feature": names, "importance": values})
    return table.sort_values(["importance", "feature"], ascending=[False, True]).reset_index(drop=True)


def train_and_log(spark, params: TrainParams) -> TrainResult:
    """Train the pipeline and log everything to the active MLflow run. Returns what was logged."""
    from pyspark.sql import functions as F

    if params.data_path:
        data_path, source_note = data_lib.check_input_path(params.data_path), "user"
    else:
        data_path = data_lib.ensure_default_data(spark)
        source_note = (f"generated (sparkmlops generator v{data_lib.GENERATOR_VERSION}, "
                       f"n_rows={data_lib.DEFAULT_N_ROWS}, seed={data_lib.DEFAULT_SEED})")
    tracking.log_params({"data_path_resolved": data_path})
    tracking.set_tags({"data_source": source_note})

    raw = data_lib.read_dataset(spark, data_path)
    spec = data_lib.infer_feature_spec(raw, params.label_col)
    cached = raw.withColumn(params.label_col, F.col(params.label_col).cast("double")).cache()
    profile = data_lib.profile_for_training(cached, spec)
    check_against_data(profile, spec)
    df = cached.filter(F.col(params.label_col).isNotNull()) if profile["null_labels"] else cached
    tracking.log_params({"n_categorical_features": len(spec.categorical_cols),
                         "n_numeric_features": len(spec.numeric_cols)})
    if spec.ignored_cols:
        tracking.set_tags({"ignored_columns": ", ".join(spec.ignored_cols)})

    train_df, test_df = df.randomSplit([params.train_fraction, 1.0 - params.train_fraction], seed=params.seed)
    train_df, test_df = train_df.cache(), test_df.cache()
    (train_digest, train_rows), (test_digest, test_rows) = map(data_lib.digest_and_count, (train_df, test_df))
    digests = {"full": profile["digest"] if df is cached else data_lib.content_digest(df),
               "train": train_digest, "test": test_digest}
    tracking.log_spark_dataset(train_df, data_path, "train", "training", train_digest, params.label_col, train_rows)
    tracking.log_spark_dataset(test_df, data_path, "test", "testing", test_digest, params.label_col, test_rows)
    tracking.set_tags({"data_digest": digests["full"]})

    started = time.perf_counter()
    model = fit_pipeline(train_df, spec, params)
    fit_seconds = time.perf_counter() - started

    predictions = model.transform(test_df).select(params.label_col, "prediction").cache()
    metrics = regression_metrics(predictions, params.label_col)
    tracking.log_metrics({**metrics, "fit_seconds": fit_seconds, "rows_null_label_dropped": profile["null_labels"],
                          "train_rows": train_rows, "test_rows": test_rows})

    importance = feature_importance_table(model, spec)
    tracking.log_dataframe_csv(importance, "feature_importance.csv")
    fig = plots.feature_importance_figure(importance)
    tracking.log_figure(fig, "feature_importance.png")
    plots.close(fig)
    sample = _plot_sample(predictions, test_rows)
    fig = plots.predicted_vs_actual_figure(sample[params.label_col], sample["prediction"], params.label_col)
    tracking.log_figure(fig, "predicted_vs_actual.png")
    plots.close(fig)

    tracking.log_spark_model(model, test_df.select(*spec.feature_cols), predictions.select("prediction"))
    for frame in (predictions, test_df, train_df, cached):
        frame.unpersist()
    return TrainResult(model=model, metrics=metrics, spec=spec, data_path=data_path,
                       feature_importance=importance, digests=digests, run_id=tracking.active_run_id())


def _plot_sample(predictions, total: int):
    fraction = min(1.0, PLOT_SAMPLE_ROWS / total) if total else 1.0
    sampled = predictions if fraction >= 1.0 else predictions.sample(fraction=fraction, seed=0)
    return sampled.toPandas()
