"""MLflow's scoring protocol (``POST /invocations``), answered fast for an exported pipeline.

The requests a client sends most -- JSON with ``dataframe_split``, ``dataframe_records``, ``instances`` or
``inputs``, every signature column present with values of its type and no nulls -- are answered here
without pandas: the body parsed by orjson, each column checked once against the model's signature, the
ONNX graph fed straight from the columns, the answer written by orjson in MLflow's response shape.

Whatever this path cannot answer for certain (CSV or another content type, ``params``, a missing column,
a value of another type, a null, an unknown category of a strict column) raises ``Undecided``, and the
server hands the request to MLflow's own handler: bad requests get MLflow's own status and message, and
a model that is not an export is answered by MLflow's own code. This path answers only requests MLflow would
answer, with the same predictions (tests/serve/test_serve.py sends the same requests to both).
"""

from __future__ import annotations

import numpy as np
import orjson

DATAFRAME_SPLIT, DATAFRAME_RECORDS, INSTANCES, INPUTS = "dataframe_split", "dataframe_records", "instances", "inputs"
JSON = "application/json"
_INT32, _INT64 = 2**31, 2**63


class Undecided(Exception):
    """This request is not one the fast path answers for certain: MLflow's handler answers it."""


def _numbers(values: list) -> bool:
    return all(type(v) is int or type(v) is float for v in values)


def _integers(values: list, bound: int | None = None) -> bool:
    return all(type(v) is int and (bound is None or -bound <= v < bound) for v in values)


# MLflow signature type -> whether a column of JSON values is one MLflow accepts for it unchanged. "float"
# is left to MLflow: it casts such a column to float32 first, which can move a value across a tree split.
_ACCEPTS = {
    "string": lambda values: all(type(v) is str for v in values),
    "double": _numbers,
    "long": lambda values: _integers(values, _INT64),
    "integer": lambda values: _integers(values, _INT32),
    "boolean": lambda values: all(type(v) is bool for v in values),
}
_NUMERIC = {"double", "long", "integer"}


def columns_of(payload: dict, names: list[str]) -> dict[str, list]:
    """The values of each of ``names`` in a parsed JSON request body, in row order; ``Undecided`` unless the
    body is one of MLflow's four dataframe forms, alone, with every column in every row."""
    if type(payload) is not dict or len(payload) != 1:
        raise Undecided("not a single input key")
    [(key, data)] = payload.items()
    if key == DATAFRAME_SPLIT:
        return _split_columns(data, names)
    if key in (DATAFRAME_RECORDS, INSTANCES) or (key == INPUTS and type(data) is list):
        return _record_columns(data, names)
    if key == INPUTS and type(data) is dict:
        return _dict_columns(data, names)
    raise Undecided(f"input key {key!r}")


def _split_columns(data, names: list[str]) -> dict[str, list]:
    if type(data) is not dict or set(data) != {"columns", "data"}:  # an index MLflow would check: left to it
        raise Undecided("dataframe_split keys")
    columns, rows = data.get("columns"), data.get("data")
    if type(columns) is not list or type(rows) is not list or not rows or len(set(map(str, columns))) != len(columns):
        raise Undecided("dataframe_split shape")
    width = len(columns)
    if any(type(row) is not list or len(row) != width for row in rows):
        raise Undecided("ragged rows")
    position = {name: i for i, name in enumerate(columns)}
    try:
        return {name: [row[position[name]] for row in rows] for name in names}
    except KeyError as missing:
        raise Undecided(f"missing column {missing}") from None


def _record_columns(records, names: list[str]) -> dict[str, list]:
    if type(records) is not list or not records or any(type(r) is not dict for r in records):
        raise Undecided("records shape")
    keys = records[0].keys()
    if any(record.keys() != keys for record in records):  # MLflow builds columns of different lengths
        raise Undecided("records with different keys")
    try:
        return {name: [record[name] for record in records] for name in names}
    except KeyError as missing:
        raise Undecided(f"missing column {missing}") from None


def _dict_columns(data: dict, names: list[str]) -> dict[str, list]:
    lengths = {len(v) if type(v) is list else -1 for v in data.values()}  # every column, used or not
    if len(lengths) != 1 or lengths.pop() < 1:
        raise Undecided("columns of different lengths")
    try:
        return {name: data[name] for name in names}
    except KeyError as missing:
        raise Undecided(f"missing column {missing}") from None


class FastPath:
    """Answers the common requests to one exported pipeline whose signature is ``schema`` (MLflow's input
    Schema): ``answer(body)`` -> the response body, or ``Undecided``. ``pipeline`` is the export's
    ``onnx_pyfunc.OnnxPipeline`` as the model's own code defines it (its session and input rules)."""

    def __init__(self, pipeline, schema):
        """ValueError when the model is not one this path can answer for exactly."""
        types = {spec.name: getattr(spec.type, "name", None) for spec in schema.inputs}
        if any(not spec.name or not spec.required or types[spec.name] not in _ACCEPTS for spec in schema.inputs):
            raise ValueError("only signatures of required columns of scalar types have a fast path")
        if any(types.get(c) != "string" for c in pipeline.string_columns) or any(
            types.get(c) not in _NUMERIC for c in pipeline.numeric_columns
        ):
            raise ValueError("the graph's columns and the signature's types differ")
        self.pipeline = pipeline
        self.checks = [(name, _ACCEPTS[kind]) for name, kind in types.items()]
        self.required = list(types)
        self.strict = {c: set(labels) for c, labels in pipeline.string_columns.items() if labels is not None}
        self.classes = pipeline.classes
        self.outputs_named = ["prediction"] if self.classes is None else ["prediction", "probability"]

    def answer(self, body: bytes) -> bytes:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Undecided("not JSON") from None
        columns = columns_of(payload, self.required)
        for name, accepts in self.checks:
            if not accepts(columns[name]):
                raise Undecided(f"column {name}: values MLflow would convert or refuse")
        return self.predictions(self.outputs(columns))

    def outputs(self, columns: dict[str, list]) -> dict[str, np.ndarray]:
        feeds = {}
        for name in self.pipeline.string_columns:
            values = columns[name]
            if name in self.strict and not self.strict[name].issuperset(values):
                raise Undecided(f"column {name}: a category the model refuses")
            feeds[name] = np.array(values, dtype=object)
        for name in self.pipeline.numeric_columns:
            feeds[name] = np.array(columns[name], dtype=np.float64)
        return dict(zip(self.outputs_named, self.pipeline.session.run(self.outputs_named, feeds)))

    def predictions(self, outputs: dict[str, np.ndarray]) -> bytes:
        """``{"predictions": [{"prediction": ...}, ...]}``: MLflow's answer for the pyfunc's DataFrame
        (one record per row; a classifier's ``probability`` a list in the order of its classes). A value
        that is not finite is left to MLflow, whose JSON writes NaN where orjson writes null."""
        numbers = [a for a in outputs.values() if a.dtype.kind == "f"]
        if any(not np.isfinite(a).all() for a in numbers):
            raise Undecided("a prediction that is not finite")
        labels = outputs["prediction"].tolist()
        if self.classes is None:
            records = [{"prediction": label} for label in labels]
        else:
            probabilities = outputs["probability"].tolist()
            records = [{"prediction": label, "probability": p} for label, p in zip(labels, probabilities)]
        return orjson.dumps({"predictions": records})
