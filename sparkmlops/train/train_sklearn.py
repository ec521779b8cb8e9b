"""The `train_sklearn` job: a single-node scikit-learn pipeline on train's data, split, task and metrics.

Spark reads, checks and splits the data exactly as `train` does (same rows in the test split for the
same seed and train_fraction, the same task, features and classes); the model, a regressor or a
classifier, is fitted on the driver and logged in MLflow's scikit-learn flavor (skops format, its trusted
types recorded) with a signature, explicit pins and train's MLmodel metadata (task, classes), so
`score_pandas_udf` can score it on the executors and `mlflow models serve` can serve it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from sparkmlops.core import choices, model_registry, tracking
from sparkmlops.core.entry_points import EntryPoint, param
from sparkmlops.data import parameters, splits
from sparkmlops.data import schema as data_schema
from sparkmlops.fitting import spark_pipeline
from sparkmlops.fitting.metrics import headline
from sparkmlops.fitting.sklearn_forest import (
    ForestParams,
    build_forest,
    check_task,
    fit_evaluate_log,
    forest_param,
)


@dataclass(frozen=True)
class SklearnTrainParams:
    """The `train_sklearn` entry point's parameters."""

    data_path: str = parameters.data_path()
    label_col: str = parameters.label_col()
    task: str = parameters.task()
    features: str = parameters.features()
    exclude: str = parameters.exclude()
    impute: str = forest_param("impute")
    model_type: str = forest_param("model_type")
    num_trees: int = forest_param("num_trees")
    max_depth: int = forest_param("max_depth")
    min_samples_leaf: int = forest_param("min_samples_leaf")
    max_features: str = forest_param("max_features")
    log_label: bool = forest_param("log_label")
    seed: int = param(42, "Seed of the split and the model.")
    train_fraction: float = parameters.train_fraction()
    register_as: str = parameters.register_as()

    def forest_params(self) -> ForestParams:
        return ForestParams(**{f.name: getattr(self, f.name) for f in fields(ForestParams)})

    def column_choice(self) -> data_schema.ColumnChoice:
        return data_schema.chosen_columns(self.task, self.features, self.exclude)

    def validate(self) -> SklearnTrainParams:
        self.forest_params().validate()
        choices.check("task", self.task, data_schema.TASKS)
        check_task(self.task, self.log_label)
        splits.check_training_inputs(self.label_col, self.train_fraction, self.data_path, self.register_as)
        return self

    def model_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("data_path", "register_as")}

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SklearnTrainResult:
    metrics: dict[str, float]
    model_uri: str
    run_id: str
    registered_version: str = ""


def train_sklearn_and_log(spark, params: SklearnTrainParams) -> SklearnTrainResult:
    """Read and split as `train` does, fit the scikit-learn pipeline, log (and register) it."""
    prepared = splits.prepare_for_training(spark, params)
    try:
        check_task(prepared.spec.task, params.log_label)  # task=auto resolved by the label's type
        if params.log_label:
            spark_pipeline.check_log_label(prepared.profile, prepared.spec)
        model = build_forest(prepared.spec, params.forest_params(), params.seed, n_jobs=-1)
        metrics, model_uri = fit_evaluate_log(prepared, model)
        result = SklearnTrainResult(metrics, model_uri, tracking.active_run_id())
        if params.register_as:
            result.registered_version = model_registry.register_result(
                params.register_as, "train_sklearn", model_uri, params.model_params(), metrics, prepared
            )
        return result
    finally:
        prepared.unpersist()


TRAIN_SKLEARN = EntryPoint(
    name="train_sklearn",
    script="train_sklearn.py",
    summary="Train and log a single-node scikit-learn model (regressor or classifier) on train's data and split.",
    params=SklearnTrainParams,
    job=lambda spark, params, checked: train_sklearn_and_log(spark, checked),
    run_name=lambda p: f"train_sklearn {p.model_type} {p.num_trees}x{p.max_depth}" + (" log" if p.log_label else ""),
    report=lambda p, result: (
        f"train_sklearn: {headline(result.metrics)} run_id={result.run_id} model={result.model_uri}"
    ),
)
