"""Entry points `main` and `train`: fit the book's Spark ML pipeline on train's split, log it, and register it
when asked."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sparkmlops.core.entry_points import EntryPoint
from sparkmlops.core.model_registry import register_result
from sparkmlops.data import parameters
from sparkmlops.data.splits import check_training_inputs, prepare_for_training
from sparkmlops.fitting.spark_pipeline import PipelineParams, TrainResult, fit_evaluate_log


@dataclass(frozen=True)
class TrainParams(PipelineParams, parameters.TrainingData):
    """The `train` entry point's parameters: where its data comes from, the pipeline's settings (declared in
    fitting.spark_pipeline.PipelineParams: a parameter added there is one of train's), and where the model
    goes."""

    train_fraction: float = parameters.train_fraction()
    register_as: str = parameters.register_as()

    def validate(self) -> TrainParams:
        """Checks that need no data; raise one clear line per problem, before Spark starts."""
        check_training_inputs(self.label_col, self.train_fraction, self.data_path, self.register_as)
        super().validate()
        return self

    def model_params(self) -> dict:
        """What defines the model (for registry tags): everything but where data and registration go."""
        return {k: v for k, v in asdict(self).items() if k not in ("data_path", "register_as")}

    def as_dict(self) -> dict:
        return asdict(self)


def train_and_log(spark, params: TrainParams) -> TrainResult:
    """Train the pipeline and log everything to the active MLflow run (and register the model when
    ``params.register_as`` names a registered model). Returns what was logged."""
    prepared = prepare_for_training(spark, params)
    try:
        result = fit_evaluate_log(prepared, params)
        if params.register_as:
            result.registered_version = register_result(
                params.register_as, "train", result.model_uri, params.model_params(), result.metrics, prepared
            )
        return result
    finally:
        prepared.unpersist()


def _report(params: TrainParams, result: TrainResult) -> str:
    metrics = result.metrics
    if result.spec.is_classifier:
        shown = " ".join(
            f"{name}={metrics[name]:.3f}" for name in ("accuracy", "f1", "log_loss", "roc_auc") if name in metrics
        )
        return f"train: {shown} classes={len(result.spec.classes)} run_id={result.run_id}"
    return f"train: rmse={metrics['rmse']:.2f} r2={metrics['r2']:.3f} mae={metrics['mae']:.2f} run_id={result.run_id}"


TRAIN = EntryPoint(
    name="train",
    script="train.py",
    summary="Train and log a Spark ML model: the book's random-forest price model by default, or a classifier.",
    params=TrainParams,
    job=lambda spark, params, checked: train_and_log(spark, checked),
    # named after what it is, the way the book names its run ("random-forest"): "train rf 100x5"
    run_name=lambda p: f"train {p.model_type} {p.num_trees}x{p.max_depth}" + (" log" if p.log_label else ""),
    report=_report,
)
