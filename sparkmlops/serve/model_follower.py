"""The model a server answers with, and following a registry alias without a restart.

A server given ``models:/<name>@<alias>`` asks the registry every ``poll_seconds`` where the alias points.
When it has moved (promote, a rollback), the new version is loaded beside the one serving and sent its own
input example through the same answering code requests take; only if that answers, it replaces the served
model in one assignment. A request reads ``current`` once, so requests in flight finish on the model they
started with and none waits for a load. A version that fails to load or to answer is not swapped in
(said once, counted), and the old one keeps serving until the alias moves again.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from sparkmlops.core import mlflow_models, model_registry
from sparkmlops.serve.scoring_protocol import JSON, FastPath

ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")


def say(line: str) -> None:
    print(f"serve: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ServedModel:
    """One loaded model and how requests to it are answered."""

    uri: str  # what was loaded: models:/<name>/<version>, runs:/..., a folder
    version: str  # the registry version ("" for a model outside the registry)
    pyfunc: object
    input_schema: object  # MLflow's input Schema, or None
    fast: FastPath | None  # the export's fast path, None for other models

    def answer_fast(self, body: bytes, content_type: str) -> bytes | None:
        """The response body when the fast path answers for certain (JSON only), else None."""
        if self.fast is None or content_type != JSON:
            return None
        try:
            return self.fast.answer(body)
        except Exception:  # Undecided, or anything unforeseen: MLflow's handler answers it
            return None

    def answer_as_mlflow(self, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        """MLflow's own handler (blocking: a thread's work in the server)."""
        return mlflow_models.answer_as_mlflow_serves(self.pyfunc, self.input_schema, body, content_type)

    def answer(self, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        fast = self.answer_fast(body, content_type)
        return (200, fast, JSON) if fast is not None else self.answer_as_mlflow(body, content_type)


def fast_path_of(pyfunc, input_schema) -> FastPath | None:
    """The fast path of an export_onnx model (its pyfunc wraps an ONNX pipeline), else None."""
    pipeline = getattr(mlflow_models.python_model_of(pyfunc), "pipeline", None)
    if input_schema is None or not all(
        hasattr(pipeline, a) for a in ("session", "string_columns", "numeric_columns", "classes")
    ):
        return None
    try:
        return FastPath(pipeline, input_schema)
    except ValueError:
        return None


def load(uri: str, version: str) -> ServedModel:
    pyfunc = mlflow_models.load_pyfunc_model(uri)
    schema = pyfunc.metadata.get_input_schema()
    return ServedModel(uri, version, pyfunc, schema, fast_path_of(pyfunc, schema))


class SmokeTestFailed(RuntimeError):
    pass


def smoke_test(model: ServedModel) -> str:
    """Send the model its own input example as a request; raise unless it answers one prediction per row.
    What was checked, for the log."""
    example = model.pyfunc.input_example
    if example is None or not hasattr(example, "to_json"):
        return "no input example to check it with"
    body = b'{"dataframe_split": ' + example.to_json(orient="split", index=False).encode() + b"}"
    status, answer, _ = model.answer(body, JSON)
    if status != 200:
        raise SmokeTestFailed(f"its input example got HTTP {status}: {answer[:300].decode(errors='replace')}")
    predictions = orjson.loads(answer).get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(example):
        raise SmokeTestFailed(f"its input example ({len(example)} rows) got {str(predictions)[:200]}")
    return f"its input example answered ({len(example)} rows)"


class ModelFollower:
    """The served model of ``model_uri``; for ``models:/<name>@<alias>``, following the alias."""

    def __init__(
        self,
        model_uri: str,
        poll_seconds: float,
        on_swap: Callable[[ServedModel], None] | None = None,
        on_refusal: Callable[[str], None] | None = None,
    ):
        self.model_uri = model_uri
        alias = ALIAS_URI.match(model_uri)
        self.name, self.alias = (alias["name"], alias["alias"]) if alias else ("", "")
        self.poll_seconds = poll_seconds
        self.on_swap = on_swap or (lambda model: None)
        self.on_refusal = on_refusal or (lambda version: None)
        self.current: ServedModel | None = None
        self.refused: set[str] = set()  # versions that failed to load or answer: not tried again
        self.swaps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def follows(self) -> bool:
        return bool(self.alias) and self.poll_seconds > 0

    def load_first(self, uri: str, version: str) -> ServedModel:
        """Load the model to serve first (its failure stops the server from starting)."""
        model = load(uri, version)
        say(f"{self.model_uri}: loaded {uri}; {smoke_test(model)}")
        self.current = model
        return model

    def check(self) -> str:
        """Ask the registry once; swap if the alias moved. 'unchanged', 'swapped' or 'refused'."""
        version = model_registry.alias_target(self.name, self.alias)
        if version is None or version == self.current.version or version in self.refused:
            return "unchanged"
        uri, began = f"models:/{self.name}/{version}", time.monotonic()
        try:
            model = load(uri, version)
            checked = smoke_test(model)
        except Exception as exc:  # any failure of the new version: the old one keeps serving
            self.refused.add(version)
            say(
                f"{self.model_uri} moved to version {version}, which was NOT swapped in "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); version {self.current.version} "
                "keeps serving."
            )
            self.on_refusal(version)
            return "refused"
        previous, self.current = self.current, model
        self.swaps += 1
        say(
            f"{self.model_uri} moved: version {previous.version} -> {version}, swapped in after "
            f"{time.monotonic() - began:.2f} s ({checked})."
        )
        self.on_swap(model)
        return "swapped"

    def start(self) -> None:
        """Poll the registry in a daemon thread (a failed poll is said and retried at the next one)."""
        if not self.follows:
            return

        def poll():
            while not self._stop.wait(self.poll_seconds):
                try:
                    self.check()
                except Exception as exc:
                    say(f"could not check {self.model_uri} ({type(exc).__name__}: {str(exc)[:200]}); retrying.")

        self._thread = threading.Thread(target=poll, name="alias-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
