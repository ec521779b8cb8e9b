"""Finding a logged or registered model from its URI, and checking data against its signature.

Everything here reads only the MLmodel file and the registry, so a wrong URI, a model of another
flavor or data of the wrong shape fail before Spark starts (or before any Spark job runs).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from sparkmlops.core import mlflow_models, model_registry, tracking
from sparkmlops.core.errors import JobFailed, UserInputError

_URI_HELP = (
    "pass -P model_uri=runs:/<run_id>/model, models:/<name>@<alias>, models:/<name>/<version> or a local model folder"
)

# MLflow signature type -> Spark types accepted for it (cast to the first one before scoring).
_ACCEPTED = {
    "string": ("string",),
    # boolean: train_sklearn's models take a boolean feature as a 0/1 double
    "double": ("double", "float", "int", "bigint", "smallint", "tinyint", "boolean"),
    "float": ("float", "int", "smallint", "tinyint"),
    "long": ("bigint", "int", "smallint", "tinyint"),
    "integer": ("int", "smallint", "tinyint"),
    "boolean": ("boolean",),
    "binary": ("binary",),
    "datetime": ("timestamp", "timestamp_ntz", "date"),
}
SPARK_TYPE = {
    "string": "string",
    "double": "double",
    "float": "float",
    "long": "bigint",
    "integer": "int",
    "boolean": "boolean",
    "binary": "binary",
    "datetime": "timestamp",
}


@dataclass(frozen=True)
class ResolvedModel:
    """What a model URI points at: for the run's tags and for checkpoint identity."""

    uri: str
    run_id: str
    registered_name: str
    version: str
    flavors: tuple[str, ...]
    signature: object  # mlflow.models.ModelSignature or None
    metadata: dict = None  # the MLmodel file's metadata (train writes task, classes, imputes_missing)

    @property
    def task(self) -> str:
        return (self.metadata or {}).get("task", "regression")

    @property
    def imputes_missing(self) -> bool:
        return bool((self.metadata or {}).get("imputes_missing"))

    @property
    def classes(self) -> list:
        return list((self.metadata or {}).get("classes", []))

    @property
    def identity(self) -> str:
        """What a stream's checkpoint is bound to. An alias stays an alias: a stream on
        models:/<name>@champion follows the champion when it is restarted after a promotion."""
        if self.registered_name and "@" in self.uri:
            return f"models:/{self.registered_name}@{self.uri.rsplit('@', 1)[1]}"
        if self.registered_name:
            return f"models:/{self.registered_name}/{self.version}"
        return f"runs:/{self.run_id}" if self.run_id else self.uri

    @property
    def load_uri(self) -> str:
        """The URI to load: an alias is pinned to the version it resolved to, so a promotion running at
        the same moment cannot make this job score with a version other than the one it logs."""
        if self.registered_name and self.version:
            return f"models:/{self.registered_name}/{self.version}"
        return self.uri

    def tags(self) -> dict[str, str]:
        return {
            "model_uri": self.uri,
            "model_run_id": self.run_id or "",
            "model_registered_name": self.registered_name or "",
            "model_version": self.version or "",
        }

    def input_columns(self) -> list[tuple[str, str]]:
        """(column, MLflow type) of the signature's inputs."""
        if self.signature is None or self.signature.inputs is None:
            raise UserInputError(
                f"model '{self.uri}' has no input signature: log it with one (train does) so its input can be checked."
            )
        return [(spec.name, spec.type.name) for spec in self.signature.inputs.inputs]


# A legacy stage with no version in it (models:/<name>/Production): MLflow says so without an error code.
_NO_STAGE_VERSION = re.compile(r"No versions of model with name '.*' and stage '.*' found")
_RUNS_URI = re.compile(r"^runs:/[^/]+/.+")
_MODELS_URI = re.compile(r"^models:/[^/@]+(/[^/]+|@[^/]+)?$")


def _run_of(model_uri: str, scheme: str) -> str:
    """The run whose artifacts hold the model, where the URI says it without the model itself: runs:/<id>,
    or a registered version's run; '' when the reference itself does not exist (nothing to probe)."""
    if scheme == "runs":
        return model_uri.split("/")[1]
    if scheme == "models" and not mlflow_models.LOGGED_MODEL_URI.match(model_uri):
        try:
            return model_registry.version_of_uri(model_uri, "")[2]
        except tracking.mlflow_exception_class() as exc:
            if tracking.is_missing(exc):
                return ""  # no such version or alias
            raise
    return ""


def check_uri_shape(model_uri: str, scheme: str) -> None:
    """A runs:/ or models:/ URI that cannot name a model, refused before MLflow is asked (which reports
    such URIs as internal errors, like an outage)."""
    if (scheme == "runs" and not _RUNS_URI.match(model_uri)) or (
        scheme == "models" and not _MODELS_URI.match(model_uri)
    ):
        raise UserInputError(f"model URI '{model_uri}' is malformed: {_URI_HELP}.")


def resolve_model(model_uri: str, require_flavor: str = "spark") -> ResolvedModel:
    """Resolve ``model_uri`` through MLflow without Spark; one clear line when it is wrong."""
    if not model_uri:
        raise UserInputError(f"model_uri is empty: {_URI_HELP}.")
    scheme = model_uri.split(":", 1)[0] if re.match(r"^[a-z][a-z0-9+.-]*:", model_uri) else ""
    if not scheme and not os.path.exists(model_uri):
        raise UserInputError(f"model '{model_uri}' is neither a model URI nor an existing folder: {_URI_HELP}.")
    check_uri_shape(model_uri, scheme)
    try:
        info = mlflow_models.model_info(model_uri)
    except (tracking.mlflow_exception_class(), OSError) as exc:  # requests' errors are OSErrors
        first = " ".join(str(exc).split())[:300]
        missing = tracking.is_missing(exc) or bool(_NO_STAGE_VERSION.search(first))
        if missing:
            # MLflow reports a model whose artifact store failed as missing too: ask the store of its run.
            try:
                missing = tracking.artifact_store_answers(_run_of(model_uri, scheme))
            except (tracking.mlflow_exception_class(), OSError):
                missing = False  # the registry did not answer either
        if missing:
            raise UserInputError(f"model '{model_uri}' not found ({first}): {_URI_HELP}.") from exc
        # The store or the artifact repository failed (down, 403, I/O): exit 1, which schedulers retry.
        raise JobFailed(
            f"could not read model '{model_uri}' from {tracking.tracking_uri()} ({type(exc).__name__}: "
            f"{first}); this is not a problem with the URI: check the tracking server and artifact "
            "store, then run again."
        ) from exc
    mlflow_models.check_skops_trust(model_uri, info.flavors)
    flavors = tuple(sorted(info.flavors))
    if require_flavor == "spark" and "spark" not in flavors:
        raise UserInputError(
            f"model '{model_uri}' is not a Spark model (its flavors: {', '.join(flavors)}): "
            "score it with score_pandas_udf (any python_function model), or pass a model "
            "logged by train."
        )
    if require_flavor and require_flavor not in flavors:
        raise UserInputError(
            f"model '{model_uri}' has no {require_flavor} flavor (its flavors: "
            f"{', '.join(flavors)}): pass a model logged by train_sklearn or any pyfunc model."
        )
    name, version, run_id = "", "", info.run_id or ""
    if scheme == "models" and mlflow_models.LOGGED_MODEL_URI.match(model_uri):
        pass  # MLflow 3's logged-model URI (models:/m-<id>): a run's model, not a registered one
    elif scheme == "models":
        name, version, run_id = model_registry.version_of_uri(model_uri, run_id)
    elif scheme == "runs":
        run_id = model_uri.split("/")[1] if model_uri.startswith("runs:/") else run_id
    return ResolvedModel(model_uri, run_id, name, version, flavors, info.signature, info.metadata or {})


def spark_schema_for(model: ResolvedModel):
    """The Spark schema of the model's inputs (for streams, which must not infer theirs)."""
    from pyspark.sql import types as T

    data_types = {
        "string": T.StringType,
        "double": T.DoubleType,
        "float": T.FloatType,
        "long": T.LongType,
        "integer": T.IntegerType,
        "boolean": T.BooleanType,
        "binary": T.BinaryType,
        "datetime": T.TimestampType,
    }
    return T.StructType(
        [T.StructField(name, data_types.get(kind, T.StringType)(), True) for name, kind in model.input_columns()]
    )


def check_input_against_signature(df, model: ResolvedModel, what: str = "input"):
    """Return ``df`` with the model's columns cast to the signature's types; refuse missing or mistyped ones."""
    from pyspark.sql import functions as F

    dtypes = dict(df.dtypes)
    missing, wrong = [], []
    for name, kind in model.input_columns():
        if name not in dtypes:
            missing.append(name)
        elif dtypes[name] not in _ACCEPTED.get(kind, (kind,)) and not dtypes[name].startswith(
            "decimal" if kind in ("double", "float") else "\0"
        ):
            wrong.append(f"{name} is {dtypes[name]}, model expects {kind}")
    problems = []
    if missing:
        problems.append(f"missing columns {', '.join(missing)}")
    if wrong:
        problems.append("wrong types: " + "; ".join(wrong))
    if problems:
        raise UserInputError(
            f"{what} does not match the model's signature: {' and '.join(problems)}. "
            "Give data with the columns the model was trained on."
        )
    casts = {
        name: F.col(name).cast(SPARK_TYPE[kind])
        for name, kind in model.input_columns()
        if kind in SPARK_TYPE and dtypes[name] != SPARK_TYPE[kind]
    }
    return df.withColumns(casts) if casts else df
