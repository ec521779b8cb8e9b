"""Entry point `score_batch`: a logged Spark ML model's ``transform`` over a batch of files, written atomically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sparkmlops.models import resolve
from sparkmlops.models.scoring import (
    check_batch_paths,
    load_spark_model,
    score_frame,
    score_input_to_output,
)


@dataclass(frozen=True)
class BatchParams:
    model_uri: str = ""
    input_path: str = ""
    output_path: str = ""
    mode: str = "error"

    def validate(self) -> resolve.ResolvedModel:
        """Everything checkable without Spark; returns the resolved model."""
        check_batch_paths(self.input_path, self.output_path, self.mode)
        return resolve.resolve_model(self.model_uri)

    def as_dict(self) -> dict:
        return asdict(self)


def predict_batch(spark, params: BatchParams, model: resolve.ResolvedModel) -> dict:
    """Score ``params.input_path`` into ``params.output_path``; log and return rows, seconds, rate."""
    return score_input_to_output(spark, params, model, lambda input_df: score_frame(load_spark_model(model),
                                                                                     input_df, model))
