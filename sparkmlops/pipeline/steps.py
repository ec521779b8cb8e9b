"""The pipeline's steps: each runs in its own nested run (pipeline.run_pipeline opens it) and reads what the
steps before it left in theirs, ``runs`` ({step: its MLflow run}); ``params`` is the pipeline's
(pipeline.PipelineParams). Each returns the line the pipeline prints for it."""

from __future__ import annotations

import importlib

from sparkmlops.core import model_registry, tracking
from sparkmlops.data import splits, validation
from sparkmlops.data.generators import ensure_default_data
from sparkmlops.pipeline import step_keys
from sparkmlops.registry.promote import PromoteParams, promote_and_log
from sparkmlops.score.score_batch import SCORE_BATCH, BatchParams, predict_batch
from sparkmlops.serve.export_onnx import EXPORT_ONNX, ExportParams, export_and_log
from sparkmlops.train.train import TRAIN, train_and_log


def tune_module(name: str):
    """``sparkmlops.tune.<name>``, loaded by name when a search is asked for: the tuners bring scikit-learn
    (2 s of imports) that a pipeline training with `train`, or reusing its steps, never needs. (The pipeline
    is the top layer: nothing imports it, so this hides no import cycle.)"""
    return importlib.import_module(f"sparkmlops.tune.{name}")


def _model_uri(runs: dict) -> str:
    return f"runs:/{runs['train'].info.run_id}/model"


def check_data(spark, params, runs: dict) -> str:
    data_path = validation.check_input_path(params.data_path) if params.data_path else ensure_default_data(spark)
    data = splits.load_labelled(spark, data_path, params.label_col, params.column_choice(), imputes_missing=True)
    try:
        profile = data.profile
        tracking.log_params({"data_path_resolved": data_path, "resolved_task": data.spec.task})
        tracking.log_metrics({"rows": profile["rows"], "null_labels": profile["null_labels"]})
        tracking.set_tags({"data_digest": data.digest, "features": ", ".join(data.spec.feature_cols)})
        return f"check_data: {profile['rows']} rows, {len(data.spec.feature_cols)} features, task {data.spec.task}"
    finally:
        data.cached.unpersist()


def train(spark, params, runs: dict) -> str:
    if params.search:
        tuner, tune_params = tune_module(f"tune_{params.search}"), params.tune_params()
        entry_point = getattr(tuner, f"TUNE_{params.search.upper()}")
        return entry_point.report(tune_params, tuner.tune_and_log(spark, tune_params))
    train_params = params.train_params()
    return TRAIN.report(train_params, train_and_log(spark, train_params))


GATED = {"regression": "r2", "classification": "accuracy"}


def evaluate(spark, params, runs: dict) -> str:
    trained = runs["train"]
    task = trained.data.params.get("resolved_task", "regression")
    metric = GATED[task]
    threshold = params.min_r2 if task == "regression" else params.min_accuracy
    value = trained.data.metrics[metric]
    passed = value >= threshold
    tracking.set_tags({"gate_metric": metric, "gate_passed": str(passed).lower()})
    tracking.log_metrics({metric: value, f"min_{metric}": threshold})
    verdict = f"{metric} {value:.4g} {'>=' if passed else '<'} min_{metric} {threshold:g}"
    return f"evaluate: {verdict}" if passed else f"evaluate: not registered: {verdict}"


def register(spark, params, runs: dict) -> str:
    trained = runs["train"]
    logged = tracking.dataset_digests(trained)
    digests = {
        "full": trained.data.tags.get("data_digest", ""),
        "train": logged.get("training", ""),
        "test": logged.get("testing", ""),
    }
    version = model_registry.register_model(
        _model_uri(runs),
        params.register_as,
        run_id=trained.info.run_id,
        entry_point=params.trainer()[0],
        params=_registered_params(params, trained),
        metrics=trained.data.metrics,
        digests=digests,
        data_path=trained.data.params.get("data_path_resolved", ""),
    )
    tracking.set_tags({"registered_model": params.register_as, "registered_model_version": str(version.version)})
    return f"register: models:/{params.register_as}/{version.version}"


def _registered_params(params, trained) -> dict:
    """The version's ``param.<name>`` tags: train's parameters; for a search, as the tuner registers its own
    best model, the search's settings and the refit's hyperparameters (logged ``best_<name>``)."""
    own = params.trainer()[1]
    best = {k[len("best_") :]: v for k, v in trained.data.params.items() if k.startswith("best_")}
    return {**own, **best} if params.search else own


def promote(spark, params, runs: dict) -> str:
    version = runs["register"].data.tags["registered_model_version"]
    gate = PromoteParams(
        model_name=params.register_as,
        version=version,
        data_path=params.data_path,
        min_improvement=params.min_improvement,
    )
    tracking.log_params(gate.as_dict())
    plan = gate.validate()
    return promote_and_log(spark, plan).line(plan.metric)


def score_batch(spark, params, runs: dict) -> str:
    model_uri = f"models:/{params.register_as}@champion" if "promote" in runs else _model_uri(runs)
    batch = BatchParams(model_uri, params.score_input_path, params.score_output_path, mode="overwrite")
    tracking.log_params(batch.as_dict())
    summary = predict_batch(spark, batch, batch.validate())
    tracking.set_tags({"output_identity": step_keys.data_identity(params.score_output_path) or ""})
    return SCORE_BATCH.report(batch, summary)


def export_onnx(spark, params, runs: dict) -> str:
    export = ExportParams(model_uri=_model_uri(runs), parity_data_path=params.data_path)
    tracking.log_params(export.as_dict())
    return EXPORT_ONNX.report(export, export_and_log(spark, export.validate()))


STEP_JOBS = {
    "check_data": check_data,
    "train": train,
    "evaluate": evaluate,
    "register": register,
    "promote": promote,
    "score_batch": score_batch,
    "export_onnx": export_onnx,
}
