"""Entry point `score_batch`: a logged model over a batch of files, checked and written atomically.

A Spark model is applied with its ``transform``; any other python_function model (the ONNX export of
a pipeline by export_onnx, a scikit-learn model) runs on the executors in a pandas UDF fed by Arrow
with only the model's input columns, loaded once per task.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

from sparkmlops.core import tracking
from sparkmlops.core.entry_points import EntryPoint
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.jobs import short_model_uri
from sparkmlops.core.spark import is_connect
from sparkmlops.data import parameters
from sparkmlops.inference import resolve
from sparkmlops.inference.pandas_predict import check_pyfunc_model, score_with_arrow_udf
from sparkmlops.inference.scoring import (
    check_batch_paths,
    load_spark_model,
    score_frame,
    score_input_to_output,
)


@dataclass(frozen=True)
class BatchParams:
    model_uri: str = parameters.model_uri()
    input_path: str = parameters.input_path()
    output_path: str = parameters.output_path()
    mode: str = parameters.output_mode()

    def validate(self) -> resolve.ResolvedModel:
        """Everything checkable without Spark; returns the resolved model."""
        check_batch_paths(self.input_path, self.output_path, self.mode)
        model = resolve.resolve_model(self.model_uri, require_flavor="")
        if "spark" not in model.flavors:
            check_pyfunc_model(model)
        return model

    def as_dict(self) -> dict:
        return asdict(self)


def predict_batch(spark, params: BatchParams, model: resolve.ResolvedModel) -> dict:
    """Score ``params.input_path`` into ``params.output_path``; log and return rows, seconds, rate."""
    if "spark" in model.flavors:
        return score_input_to_output(
            spark,
            params,
            model,
            lambda input_df: score_frame(load_spark_model(model), input_df, model),
            tags={"scored_with": "spark_transform"},
        )
    if is_connect(spark):
        raise UserInputError(
            f"model '{model.uri}' is a python_function model, which score_batch ships to the "
            "executors with SparkContext.addFile, not available over Spark Connect: use a "
            "master instead of SPARK_REMOTE, or score the Spark model it was exported from."
        )
    counters: dict = {}
    summary = score_input_to_output(
        spark,
        params,
        model,
        functools.partial(score_with_arrow_udf, spark, model=model, counters=counters),
        tags={"scored_with": "arrow_pandas_udf"},
    )
    extra = {"model_loads": counters["model_loads"].value, "arrow_batches": counters["batches"].value}
    tracking.log_metrics(extra)
    return {**summary, **extra}


SCORE_BATCH = EntryPoint(
    name="score_batch",
    script="score_batch.py",
    summary="Score a dataset in batch.",
    params=BatchParams,
    job=predict_batch,
    run_name=lambda p: f"score_batch {short_model_uri(p.model_uri)}",
    report=lambda p, summary: (
        f"score_batch: {summary['rows_scored']} rows -> {p.output_path} in {summary['seconds']:.1f} s "
        f"({summary['rows_per_second']:.0f} rows/s), model {summary['model']}"
    ),
)
