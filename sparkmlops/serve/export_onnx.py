"""The `export_onnx` job: convert a logged Spark pipeline to ONNX, prove it predicts what Spark predicts,
and log it as an MLflow pyfunc model that serves without Spark.

The conversion reads the saved model files only (sparkmlops.serve.onnx_convert), so an unsupported stage is
refused before Spark starts. Parity is then measured on real rows: the model's training data (or the
generated data, or ``parity_data_path``) plus copies with unseen and null categories, scored by Spark's
``transform`` and by the exported model's own pyfunc code; the export fails if any prediction differs
by more than ``PARITY_TOLERANCE`` (relative); for a classifier, if any class differs or any probability differs by
more than ``PARITY_TOLERANCE`` (absolute).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from sparkmlops.core import environment, mlflow_models, model_registry, tracking
from sparkmlops.core.entry_points import EntryPoint, param
from sparkmlops.core.errors import JobFailed
from sparkmlops.core.jobs import short_model_uri
from sparkmlops.data import generators, parameters, validation
from sparkmlops.inference import resolve, scoring
from sparkmlops.serve import onnx_convert, onnx_pyfunc, pipeline_plan
from sparkmlops.serve.onnx_pyfunc import OnnxPipeline, OnnxPipelineModel

PARITY_TOLERANCE = 1e-6
PARITY_SAMPLE_ROWS = 20000
EDGE_ROWS = 50  # rows per edge case (unseen category, null category)
UNSEEN_CATEGORY = "__sparkmlops_unseen__"
ONNX_RUNTIME_PACKAGES = ("mlflow", "onnxruntime", "pandas", "numpy")


class ParityError(JobFailed):
    """The exported graph does not reproduce Spark's predictions: a converter bug, never exported."""


@dataclass(frozen=True)
class ExportParams:
    model_uri: str = parameters.model_uri()
    register_as: str = parameters.register_as()
    parity_data_path: str = param(
        "", "Rows to check parity on; empty = the data the model was trained on (else the generated data)."
    )

    def validate(self) -> ExportPlan:
        """Resolve the model, download it and convert it: all before Spark starts."""
        if self.register_as:
            model_registry.check_model_name(self.register_as)
        if self.parity_data_path:
            validation.check_input_path(self.parity_data_path, "parity_data_path")
        source = resolve.resolve_model(self.model_uri)
        with tempfile.TemporaryDirectory(prefix="sparkmlops-export-") as download:  # the graph is kept in memory
            local = mlflow_models.download_artifacts(artifact_uri=source.load_uri, dst_path=download)
            onnx_model, plan = onnx_convert.convert_saved_pipeline(local)
        return ExportPlan(self, source, onnx_model, plan)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ExportPlan:
    params: ExportParams
    source: resolve.ResolvedModel
    onnx_model: object
    plan: pipeline_plan.PipelinePlan

    def write_graph(self, folder: str) -> str:
        """The ONNX graph as ``folder/model.onnx``; its path."""
        path = os.path.join(folder, "model.onnx")
        with open(path, "wb") as f:
            f.write(self.onnx_model.SerializeToString())
        return path

    def metadata(self) -> dict:
        return {
            "string_columns": {
                c: (labels if handle == "error" else None)
                for c, (_, labels, handle) in self.plan.string_columns.items()
            },
            "numeric_columns": list(self.plan.numeric_inputs),
            "imputed_columns": sorted(column for column, _ in self.plan.imputed.values()),
            "tree_model": self.plan.trees.kind,
            "n_trees": self.plan.trees.n_trees,
            "source_model_uri": self.source.uri,
            **({"classes": self.plan.classes} if self.plan.is_classifier else {}),
        }


def _training_data_path(source: resolve.ResolvedModel) -> str:
    """The data the source model was trained on, when its run says so and the path still exists."""
    path = tracking.run_parameters_of(source.run_id).get("data_path_resolved", "")
    return path if path and (not validation.is_local_path(path) or os.path.exists(validation.local_path(path))) else ""


def parity_frame(
    spark, data_path: str, string_columns: list[str], feature_columns: list[str], model=None, imputed_columns=()
):
    """Rows to compare on: a sample of the data, plus copies whose categories are unseen or null, and whose
    imputed numeric columns are null (one at a time, then all). With ``model``, the data is first checked as
    scorers check theirs (signature, finite numeric values)."""
    from pyspark.sql import functions as F

    source = validation.read_dataset(spark, data_path)
    if model is not None:
        scoring.check_scorable(source, model, what="parity data")
    source = source.select(*feature_columns)
    total = source.count()
    sample = source if total <= PARITY_SAMPLE_ROWS else source.sample(fraction=PARITY_SAMPLE_ROWS / total, seed=0)
    head = source.limit(EDGE_ROWS)
    parts = [sample]
    if string_columns:
        parts.append(head.withColumns({c: F.lit(UNSEEN_CATEGORY) for c in string_columns}))
        parts.append(head.withColumns({c: F.lit(None).cast("string") for c in string_columns}))
        for i, column in enumerate(string_columns):  # one column unseen or null at a time
            value = F.lit(UNSEEN_CATEGORY) if i % 2 == 0 else F.lit(None).cast("string")
            parts.append(head.limit(5).withColumn(column, value))
    if imputed_columns:
        types = dict(source.dtypes)
        parts.append(head.withColumns({c: F.lit(None).cast(types[c]) for c in imputed_columns}))
        for column in imputed_columns:
            parts.append(head.limit(5).withColumn(column, F.lit(None).cast(types[column])))
    frame = parts[0]
    for part in parts[1:]:
        frame = frame.unionByName(part)
    # One partition per part would be one task each, and every task pays the model's deserialisation: the
    # parts are small, so they are scored in one task. A sample of large data is still read in parallel
    # (repartition moves only the sampled rows); coalesce would pull the whole scan into that one task.
    return frame.coalesce(1) if total <= PARITY_SAMPLE_ROWS else frame.repartition(1)


def measure_parity(spark, plan: ExportPlan, data_path: str) -> dict:
    """Score the parity rows with Spark and with the exported model's pyfunc code; return the differences."""

    columns = [c for c, _ in plan.source.input_columns()]
    frame = parity_frame(
        spark,
        data_path,
        list(plan.plan.string_columns),
        columns,
        model=plan.source,
        imputed_columns=[column for column, _ in plan.plan.imputed.values()],
    )
    checked = resolve.check_input_against_signature(frame, plan.source, what="parity data")
    spark_model = scoring.load_spark_model(plan.source)
    outputs = ["prediction", "probability"] if plan.plan.is_classifier else ["prediction"]
    transformed = spark_model.transform(checked)
    if plan.plan.is_classifier:
        from pyspark.ml.functions import vector_to_array

        transformed = transformed.withColumn("probability", vector_to_array("probability"))
    scored = transformed.select(*columns, *outputs).toPandas()
    with tempfile.TemporaryDirectory(prefix="sparkmlops-parity-") as folder:
        # One thread, as served: with several, onnxruntime splits the trees and float32 sums round differently.
        exported = OnnxPipeline(plan.write_graph(folder), plan.metadata(), intra_op_threads=1).outputs(scored[columns])
    if plan.plan.is_classifier:
        return _class_parity(scored, exported)
    expected = scored["prediction"].to_numpy(dtype=np.float64)
    absolute = np.abs(exported["prediction"] - expected)
    relative = absolute / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
    worst = int(np.argmax(relative)) if len(relative) else 0
    return {
        "parity_rows": float(len(expected)),
        "parity_max_rel_diff": float(relative.max(initial=0.0)),
        "parity_max_abs_diff": float(absolute.max(initial=0.0)),
        "worst": {
            "row": worst,
            "spark": float(expected[worst]) if len(expected) else 0.0,
            "onnx": float(exported["prediction"][worst]) if len(expected) else 0.0,
        },
    }


def _class_parity(scored, exported: dict) -> dict:
    """A classifier's parity: rows whose class differs, and the largest difference of a probability."""
    expected = np.stack(scored["probability"].to_numpy()) if len(scored) else np.zeros((0, 1))
    absolute = np.abs(exported["probability"] - expected).max(axis=1, initial=0.0)
    mismatched = scored["prediction"].to_numpy() != exported["prediction"]
    worst = int(np.argmax(mismatched)) if mismatched.any() else int(np.argmax(absolute)) if len(absolute) else 0
    return {
        "parity_rows": float(len(scored)),
        "parity_class_mismatches": float(mismatched.sum()),
        "parity_max_abs_diff": float(absolute.max(initial=0.0)),
        "worst": {
            "row": worst,
            "spark": f"{scored['prediction'].iloc[worst]!r} {expected[worst].tolist()}" if len(scored) else "",
            "onnx": f"{exported['prediction'][worst]!r} {exported['probability'][worst].tolist()}"
            if len(scored)
            else "",
        },
    }


def check_parity(parity: dict, worst: dict) -> None:
    """Raise ParityError when the graph does not reproduce Spark within PARITY_TOLERANCE."""
    rows = int(parity["parity_rows"])
    where = f"(row {worst['row']}: Spark {worst['spark']!r}, ONNX {worst['onnx']!r}); nothing was exported."
    if "parity_class_mismatches" in parity:
        if parity["parity_class_mismatches"] or not parity["parity_max_abs_diff"] <= PARITY_TOLERANCE:
            raise ParityError(
                f"the exported graph gives another class than Spark on {int(parity['parity_class_mismatches'])} "
                f"of {rows} rows and probabilities differing by up to {parity['parity_max_abs_diff']:.3g} {where}"
            )
    elif not parity["parity_max_rel_diff"] <= PARITY_TOLERANCE:
        raise ParityError(
            f"the exported graph differs from Spark by up to {parity['parity_max_rel_diff']:.3g} "
            f"(relative) on {rows} rows {where}"
        )


def _pyfunc_code(workdir: str) -> str:
    """A copy of the package holding only the serving wrapper (sparkmlops/serve/onnx_pyfunc.py and its
    packages' empty __init__ files): what the exported model needs, not the Spark project."""
    package = os.path.join(workdir, "code", "sparkmlops")
    os.makedirs(os.path.join(package, "serve"), exist_ok=True)
    for folder in (package, os.path.join(package, "serve")):
        open(os.path.join(folder, "__init__.py"), "w").close()
    shutil.copy(onnx_pyfunc.__file__, os.path.join(package, "serve", "onnx_pyfunc.py"))
    return package


def log_onnx_model(plan: ExportPlan, input_example, workdir: str):
    """Log the pyfunc (onnxruntime) model with the Spark model's signature and the graph itself; the
    files are put together in ``workdir`` first."""
    onnx_path = plan.write_graph(workdir)
    metadata_path = os.path.join(workdir, "onnx_metadata.json")
    with open(metadata_path, "w") as f:
        json.dump(plan.metadata(), f, indent=1)
    package_dir = _pyfunc_code(workdir)
    return mlflow_models.log_pyfunc_model(
        name=mlflow_models.MODEL_NAME,
        python_model=OnnxPipelineModel(),
        artifacts={"onnx_model": onnx_path, "metadata": metadata_path},
        code_paths=[package_dir],  # the wrapper class is unpickled from sparkmlops.serve.onnx_pyfunc
        # a classifier answers its class and the probabilities (the Spark model's signature has the class only)
        signature=mlflow_models.classifier_signature(plan.source.signature.inputs, plan.plan.label_type)
        if plan.plan.is_classifier
        else plan.source.signature,
        input_example=input_example,
        pip_requirements=environment.model_pip_requirements(ONNX_RUNTIME_PACKAGES),
        # What scorers read from MLmodel: the task, and whether nulls and NaN are the model's to impute.
        metadata={**(plan.source.metadata or {}), "imputes_missing": bool(plan.plan.imputed)},
    )


def export_and_log(spark, plan: ExportPlan) -> dict:
    """Measure parity, then log (and register) the exported model; the run's summary."""
    with tempfile.TemporaryDirectory(prefix="sparkmlops-export-") as workdir:
        return _export_and_log(spark, plan, workdir)


def _export_and_log(spark, plan: ExportPlan, workdir: str) -> dict:
    started = time.perf_counter()
    data_path = (
        plan.params.parity_data_path or _training_data_path(plan.source) or generators.ensure_default_data(spark)
    )
    source_tags = {f"source_{k}": v for k, v in plan.source.tags().items()}
    tracking.set_tags(
        {
            **source_tags,
            "parity_data_path": data_path,
            "tree_model": plan.plan.trees.kind,
            "onnx_opsets": f"ai.onnx {onnx_convert.ONNX_OPSET}, ai.onnx.ml {onnx_convert.ML_OPSET}",
        }
    )
    parity = measure_parity(spark, plan, data_path)
    worst = parity.pop("worst")
    tracking.log_metrics({**parity, "n_trees": plan.plan.trees.n_trees})
    check_parity(parity, worst)
    example = (
        validation.read_dataset(spark, data_path)
        .select(*[c for c, _ in plan.source.input_columns()])
        .limit(5)
        .toPandas()
    )
    info = log_onnx_model(plan, example, workdir)
    tracking.log_artifact_file(os.path.join(workdir, "model.onnx"), "onnx")
    summary = {
        **parity,
        "export_seconds": time.perf_counter() - started,
        "model_uri": info.model_uri,
        "run_id": tracking.active_run_id(),
        "registered_version": "",
    }
    # The parity metrics, logged before the model, MLflow links to it as it logs it; this one comes after.
    tracking.log_metrics({"export_seconds": summary["export_seconds"]}, model_id=info.model_id)
    if plan.params.register_as:
        version = model_registry.register_model(
            info.model_uri,
            plan.params.register_as,
            run_id=summary["run_id"],
            entry_point="export_onnx",
            params={"source_model_uri": plan.source.uri, "tree_model": plan.plan.trees.kind},
            metrics={k: v for k, v in parity.items()},
            digests={},
            data_path=data_path,
        )
        summary["registered_version"] = str(version.version)
        tracking.set_tags(
            {"registered_model": plan.params.register_as, "registered_model_version": summary["registered_version"]}
        )
    return summary


def _report(params: ExportParams, summary: dict) -> str:
    registered = f" registered version {summary['registered_version']}" if summary["registered_version"] else ""
    if "parity_class_mismatches" in summary:
        difference = f"same class as Spark, max probability difference {summary['parity_max_abs_diff']:.2e}"
    else:
        difference = f"max relative difference to Spark {summary['parity_max_rel_diff']:.2e}"
    return (
        f"export_onnx: {int(summary['parity_rows'])} rows, {difference}; model {summary['model_uri']} "
        f"run_id={summary['run_id']}{registered}"
    )


EXPORT_ONNX = EntryPoint(
    name="export_onnx",
    script="export_onnx.py",
    summary="Export a logged Spark pipeline to ONNX and log it as a servable pyfunc model.",
    params=ExportParams,
    job=lambda spark, params, plan: export_and_log(spark, plan),
    run_name=lambda p: f"export_onnx {short_model_uri(p.model_uri)}",
    report=_report,
)
