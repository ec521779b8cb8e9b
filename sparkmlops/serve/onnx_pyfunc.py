"""The MLflow pyfunc that serves an exported pipeline with onnxruntime: no Spark, no JVM.

Shipped inside the logged model (``code_paths``), so it imports nothing from the rest of the package:
numpy, pandas, onnxruntime and mlflow only. Input rules follow the Spark pipeline it came from:

- string columns: any value; a null or a category unseen in training gets Spark's "keep" index (a
  prediction, never an error), unless the pipeline's StringIndexer used handleInvalid='error';
- numeric columns: numbers only; a null or NaN is imputed inside the graph where the pipeline imputes it
  (``imputed_columns``), and refused elsewhere, as Spark's VectorAssembler refuses it.

A classifier's graph gives ``prediction`` in the label's own values and ``probability``, one per class in the
order of ``classes``; the pyfunc answers both columns.

Problems with the request raise ``MlflowException(INVALID_PARAMETER_VALUE)``, which ``mlflow models
serve`` answers with HTTP 400.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

NULL_SENTINEL = "\u0000sparkmlops-null\u0000"  # must equal onnx_convert.NULL_SENTINEL


def _bad_request(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class OnnxPipeline:
    """An exported pipeline: the ONNX graph plus what its inputs must be. Usable without MLflow serving."""

    def __init__(self, onnx_path: str, metadata: dict, intra_op_threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One request is a few rows: a thread pool per call costs more than the trees do.
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        self.string_columns = metadata["string_columns"]  # column -> labels if handleInvalid=error, else None
        self.numeric_columns = metadata["numeric_columns"]
        self.classes = metadata.get("classes")  # a classifier's, else None
        imputed = set(metadata.get("imputed_columns", ()))
        self.checked_for_nan = np.array([c not in imputed for c in self.numeric_columns], dtype=bool)

    def feeds(self, frame: pd.DataFrame) -> dict:
        """The graph's inputs from a DataFrame of raw columns; vectorised (a request is often one row,
        so per-column pandas calls, not the trees, would dominate its latency)."""
        missing = [c for c in [*self.string_columns, *self.numeric_columns] if c not in frame.columns]
        if missing:
            raise _bad_request(f"missing columns: {', '.join(missing)}; every record needs the model's input columns.")
        feeds = {}
        for column, strict_labels in self.string_columns.items():
            values = frame[column].to_numpy(dtype=object)
            nulls = pd.isna(values)
            if nulls.any():
                values = values.copy()
                values[nulls] = NULL_SENTINEL
            if pd.api.types.infer_dtype(values, skipna=False) != "string":
                values = values.astype(str).astype(object)
            if strict_labels is not None:
                unknown = sorted(set(values.tolist()) - set(strict_labels))
                if unknown:
                    raise _bad_request(f"column {column} has values the model does not know: {unknown[:5]}.")
            feeds[column] = values
        if self.numeric_columns:
            numbers = frame[self.numeric_columns]
            try:
                matrix = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError):
                for column in self.numeric_columns:
                    converted = pd.to_numeric(numbers[column], errors="coerce")
                    bad = converted.isna() & numbers[column].notna()
                    if bad.any():
                        raise _bad_request(
                            f"column {column} must be numeric, got {numbers[column][bad].iloc[0]!r}."
                        ) from None
                raise
            invalid = np.isnan(matrix) & self.checked_for_nan
            if invalid.any():
                column = self.numeric_columns[int(np.argmax(invalid.any(axis=0)))]
                raise _bad_request(
                    f"column {column} has a null or NaN value: the Spark pipeline refuses them too; "
                    "send a number (impute missing values as the training data did)."
                )
            for i, column in enumerate(self.numeric_columns):
                feeds[column] = np.ascontiguousarray(matrix[:, i])
        return feeds

    def outputs(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """``prediction`` ([N]) and, for a classifier, ``probability`` ([N, classes])."""
        names = ["prediction", "probability"] if self.classes is not None else ["prediction"]
        if len(frame) == 0:
            classes = len(self.classes or ())
            return {
                "prediction": np.zeros(0, dtype=object if classes else np.float64),
                "probability": np.zeros((0, classes)),
            }
        return dict(zip(names, self.session.run(names, self.feeds(frame))))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.outputs(frame)["prediction"]


class OnnxPipelineModel(PythonModel):
    """pyfunc wrapper: artifacts ``onnx_model`` (the graph) and ``metadata`` (input rules, JSON)."""

    def load_context(self, context):
        with open(context.artifacts["metadata"]) as f:
            metadata = json.load(f)
        self.pipeline = OnnxPipeline(context.artifacts["onnx_model"], metadata)

    # A DataFrame hint: MLflow neither validates nor infers from it, and stops warning at import that
    # predict has no hint (pipeline and export_onnx printed it on every run).
    def predict(self, context, model_input: pd.DataFrame, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        outputs = self.pipeline.outputs(frame)
        if self.pipeline.classes is None:
            return pd.DataFrame({"prediction": outputs["prediction"]})
        # one list per row, as score_batch writes its probability column
        return pd.DataFrame({"prediction": outputs["prediction"], "probability": outputs["probability"].tolist()})
