"""Streaming scoring: a folder of parquet files in, a parquet file sink out, exactly once.

The stream's schema is the model's signature (never inferred from the files), so extra columns in the
files are ignored. The file sink and the checkpoint give exactly-once output: after a crash, the same
command resumes from the checkpoint. Spark's sink metadata log (``<output>/_spark_metadata``) says
which files are committed; a kill can leave an uncommitted, possibly 0-byte part file in the folder,
so read the output with Spark (``spark.read.parquet(output)``), never by listing files.
"""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass
from urllib.parse import unquote

try:  # POSIX: the checkpoint lock; elsewhere streams are not locked
    import fcntl
except ImportError:
    fcntl = None

from sparkmlops.core import tracking
from sparkmlops.core.entry_points import EntryPoint, param
from sparkmlops.core.errors import Terminated, UserInputError
from sparkmlops.core.jobs import short_model_uri
from sparkmlops.data import parameters, validation
from sparkmlops.inference import resolve, scoring

IDENTITY_FILE = "sparkmlops-stream.json"
_INTERVAL = re.compile(r"^\s*(\d+(\.\d+)?)\s*(ms|milliseconds?|s|seconds?|m|minutes?|h|hours?)\s*$")


@dataclass(frozen=True)
class StreamParams:
    model_uri: str = parameters.model_uri()
    input_path: str = param("", "Folder that receives parquet files.", required=True)
    output_path: str = parameters.output_path("Parquet folder the file sink writes.")
    checkpoint_path: str = param("", "Checkpoint folder of this stream (one per model and output).", required=True)
    max_files_per_trigger: int = param(1, "New files per micro-batch.")
    trigger: str = param("available_now", "available_now, or an interval such as '10 seconds' (runs until stopped).")

    def validate(self) -> resolve.ResolvedModel:
        for name in ("input_path", "output_path", "checkpoint_path"):
            if not getattr(self, name):
                raise UserInputError(f"{name} is empty: pass -P {name}=<folder>.")
        if self.max_files_per_trigger < 1:
            raise UserInputError(f"max_files_per_trigger must be >= 1, got {self.max_files_per_trigger}.")
        trigger_kwargs(self.trigger)
        validation.check_input_path(self.input_path, "input_path", allow_empty=True)
        validation.check_output_path(self.output_path, "append", self.input_path)  # a stream appends: it may exist
        if validation.is_local_path(self.input_path) and not os.path.isdir(validation.local_path(self.input_path)):
            raise UserInputError(
                f"input_path '{self.input_path}' is a file: a stream reads a folder that receives parquet files."
            )
        model = resolve.resolve_model(self.model_uri)
        model.input_columns()  # a stream needs the signature for its schema
        check_files_against_signature(self.input_path, model)
        check_checkpoint(self, model)
        lock_checkpoint(self.checkpoint_path)  # last: held until the stream ends (run_stream releases it)
        return model

    def as_dict(self) -> dict:
        return asdict(self)


def check_files_against_signature(input_path: str, model: resolve.ResolvedModel) -> None:
    """Before Spark, from the parquet footers of a local folder: every file has the model's columns with
    their kind (number or text), or the one that does not is named. Spark reads a stream's files with the
    model's schema, so a file without a column would score nulls, and one with another type would stop
    the stream mid-way."""
    if not validation.is_local_path(input_path):
        return
    expected = {name: kind == "string" for name, kind in model.input_columns()}
    for path, columns in validation.parquet_file_columns(validation.local_path(input_path)):
        missing = [c for c in expected if c not in columns]
        retyped = [
            f"{c} is {columns[c]}, model expects {'string' if text else 'numeric'}"
            for c, text in expected.items()
            if c in columns and (columns[c] == "string") != text
        ]
        problems = ([f"missing columns {', '.join(missing[:10])}"] if missing else []) + (
            ["wrong types: " + "; ".join(retyped[:10])] if retyped else []
        )
        if problems:
            raise UserInputError(
                f"input file {path} does not match the model's signature: {' and '.join(problems)}. "
                "Remove or fix it: a stream reads every file with the model's columns."
            )


def trigger_kwargs(trigger: str) -> dict:
    """``available_now`` or a processing-time interval such as ``10 seconds``."""
    if trigger == "available_now":
        return {"availableNow": True}
    if _INTERVAL.match(trigger or ""):
        return {"processingTime": trigger.strip()}
    raise UserInputError(f"trigger must be 'available_now' or an interval such as '10 seconds', got '{trigger}'.")


def _identity(params: StreamParams, model: resolve.ResolvedModel) -> dict:
    def norm(path):
        return os.path.abspath(validation.local_path(path)) if validation.is_local_path(path) else path

    return {"model": model.identity, "output_path": norm(params.output_path), "input_path": norm(params.input_path)}


def check_checkpoint(params: StreamParams, model: resolve.ResolvedModel) -> None:
    """Refuse a checkpoint made for another model, input or output, and an output without its checkpoint."""
    if not validation.is_local_path(params.checkpoint_path):
        return  # remote checkpoints: identity is checked by Spark's own offsets only
    checkpoint = validation.local_path(params.checkpoint_path)
    identity_file = os.path.join(checkpoint, IDENTITY_FILE)
    expected = _identity(params, model)
    if os.path.exists(identity_file):
        with open(identity_file) as f:
            recorded = json.load(f)
        differences = [
            f"{key} {recorded.get(key)!r} (now {value!r})"
            for key, value in expected.items()
            if recorded.get(key) != value
        ]
        if differences:
            raise UserInputError(
                f"checkpoint '{params.checkpoint_path}' belongs to another stream: it was made "
                f"for {'; '.join(differences)}. Use a new checkpoint_path (and output_path) "
                "for a different model or output."
            )
    elif os.path.isdir(checkpoint) and set(os.listdir(checkpoint)) - {LOCK_FILE}:
        raise UserInputError(
            f"checkpoint '{params.checkpoint_path}' is not empty and was not made by score_stream: "
            "use a new checkpoint_path."
        )
    elif validation.is_local_path(params.output_path):
        output = validation.local_path(params.output_path)
        if os.path.exists(output) and os.listdir(output):
            raise UserInputError(
                f"output '{params.output_path}' already holds data but checkpoint "
                f"'{params.checkpoint_path}' is new: resuming needs the output's own checkpoint; "
                "use a new output_path."
            )


LOCK_FILE = "sparkmlops-stream.lock"
_HELD_LOCKS: dict[str, int] = {}  # checkpoint folder -> descriptor of its lock file, held by this process


def lock_checkpoint(checkpoint_path: str) -> None:
    """Hold the checkpoint for this process until the stream ends: a second score_stream on it (another
    process) is refused here, before Spark, instead of racing this one for the same micro-batches. An
    advisory lock (flock) on a file in the checkpoint, which the system releases when the process ends,
    however it ends, so a killed stream never leaves a stale lock. Local checkpoints only: on HDFS or an
    object store, Spark's own offset log refuses the second writer of a batch."""
    if fcntl is None or not validation.is_local_path(checkpoint_path):
        return
    folder = os.path.abspath(validation.local_path(checkpoint_path))
    if folder in _HELD_LOCKS:
        return
    os.makedirs(folder, exist_ok=True)
    descriptor = os.open(os.path.join(folder, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 200).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise UserInputError(
            f"checkpoint '{checkpoint_path}' is in use by another score_stream (process {holder}): "
            "one stream per checkpoint; stop the other one, or use another checkpoint_path "
            "and output_path."
        ) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()} on {socket.gethostname()}".encode())
    _HELD_LOCKS[folder] = descriptor


def release_checkpoint(checkpoint_path: str) -> None:
    if validation.is_local_path(checkpoint_path):
        descriptor = _HELD_LOCKS.pop(os.path.abspath(validation.local_path(checkpoint_path)), None)
        if descriptor is not None:
            os.close(descriptor)  # releases the lock


def _record_identity(params: StreamParams, model: resolve.ResolvedModel) -> None:
    if not validation.is_local_path(params.checkpoint_path):
        return
    checkpoint = validation.local_path(params.checkpoint_path)
    os.makedirs(checkpoint, exist_ok=True)
    path = os.path.join(checkpoint, IDENTITY_FILE)
    if not os.path.exists(path):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(_identity(params, model), f, indent=1)
        os.replace(tmp, path)


def check_stream_input(spark, params: StreamParams, model: resolve.ResolvedModel) -> None:
    """The files already there must carry the model's columns (their schema only: a restart must not
    re-read the stream's history; values are checked row by row as they stream, see guard_values)."""
    df = validation.read_dataset(spark, params.input_path)
    resolve.check_input_against_signature(df, model, what=f"input '{params.input_path}'")


class ProgressReporter:
    """One line and MLflow metrics (step = batch id) per micro-batch, read from the query's progress; and
    the files a micro-batch skipped because they were gone when it read them (``skipped_files``)."""

    def __init__(self, run_id: str, checkpoint_path: str = ""):
        self.run_id = run_id
        self.seen: set[int] = set()
        self.latencies_ms: list[float] = []
        self.rows = 0
        self.checkpoint_path = checkpoint_path
        self.checked: set[int] = set()
        self.skipped_files: list[str] = []

    def report(self, query) -> None:
        for progress in query.recentProgress:
            # Attributes, not keys: over Spark Connect the JSON has no numInputRows (the property sums the sources).
            batch_id, rows = progress.batchId, progress.numInputRows
            if batch_id not in self.checked:
                self.checked.add(batch_id)
                try:
                    self.check_skipped_files(batch_id, rows)
                except (OSError, ValueError) as exc:  # a report, never a reason to stop the stream
                    print(
                        f"score_stream: warning: could not check micro-batch {batch_id}'s files for skipped ones "
                        f"({type(exc).__name__}: {exc})",
                        flush=True,
                    )
            if batch_id in self.seen or rows == 0:
                continue  # a trigger with no new files repeats the last batch id with 0 rows
            self.seen.add(batch_id)
            latency = float((progress.durationMs or {}).get("triggerExecution", 0))
            self.latencies_ms.append(latency)
            self.rows += rows
            print(
                f"score_stream: batch {batch_id}: {rows} rows in {latency:.0f} ms "
                f"({rows / latency * 1000 if latency else 0:.0f} rows/s)",
                flush=True,
            )
            tracking.log_step_metrics(self.run_id, {"batch_rows": rows, "batch_latency_ms": latency}, batch_id)

    def check_skipped_files(self, batch_id: int, rows: int) -> None:
        """The stream reads with ignoreMissingFiles (see run_stream), so a file listed in a micro-batch but
        gone when the batch read it is skipped without a word from Spark. A listed file that is gone now
        was skipped when the batch's rows equal the rows of its files still there (from their parquet
        footers); otherwise it was read, then removed. Local checkpoints and inputs only."""
        listed = batch_files(self.checkpoint_path, batch_id)
        gone = [path for path in listed if not os.path.exists(path)]
        if not gone:
            return
        import pyarrow.parquet as pq

        present_rows = sum(pq.ParquetFile(path).metadata.num_rows for path in listed if path not in gone)
        if present_rows != rows:
            return
        for path in gone:
            print(
                f"score_stream: warning: micro-batch {batch_id} skipped {path}: the file was gone when the batch "
                "read it (ignoreMissingFiles); its rows were not scored",
                flush=True,
            )
        self.skipped_files += gone
        tracking.log_step_metrics(self.run_id, {"skipped_files": len(self.skipped_files)}, batch_id)


def batch_files(checkpoint_path: str, batch_id: int) -> list[str]:
    """The local files the stream's file source listed for micro-batch ``batch_id``, from its log in the
    checkpoint (``sources/0/<id>``, or a ``<n>.compact`` file holding every batch up to n)."""
    if not checkpoint_path or not validation.is_local_path(checkpoint_path):
        return []
    log = os.path.join(validation.local_path(checkpoint_path), "sources", "0")
    if not os.path.isdir(log):
        return []
    candidates = [os.path.join(log, str(batch_id))] + sorted(
        (os.path.join(log, n) for n in os.listdir(log) if n.endswith(".compact") and int(n.split(".")[0]) >= batch_id),
        key=lambda p: int(os.path.basename(p).split(".")[0]),
    )
    for path in candidates:
        if not os.path.exists(path):
            continue
        files = []
        with open(path) as f:
            for line in f.read().splitlines()[1:]:  # the first line is the log's version
                entry = json.loads(line) if line.strip() else {}
                if entry.get("batchId") == batch_id and validation.is_local_path(entry.get("path", "")):
                    files.append(unquote(validation.local_path(entry["path"])))
        return files
    return []


# Marks the error a guarded row raises, so the failure is told apart from Spark's own.
_BAD_ROW = "sparkmlops-bad-value"


def guard_values(source, model: resolve.ResolvedModel):
    """The stream with every numeric model input checked row by row: an infinite value (or a null or NaN,
    unless the model imputes them) stops the query with an error naming the file it came from (the batch
    scorers count such rows before writing; a stream cannot look ahead)."""
    from pyspark.sql import functions as F

    guarded = {}
    for column, kind in model.input_columns():
        if kind not in ("double", "float", "long", "integer"):
            continue
        value = F.col(column).cast("double")
        bad = F.abs(value) == F.lit(float("inf"))
        if model.imputes_missing:
            bad, what = F.coalesce(bad, F.lit(False)), "an infinite"
        else:
            bad, what = value.isNull() | F.isnan(value) | bad, "a null, NaN or infinite"
        message = F.concat(F.lit(f"{_BAD_ROW}: file "), F.input_file_name(), F.lit(f" has {what} {column}"))
        guarded[column] = F.when(bad, F.raise_error(message)).otherwise(F.col(column))
    return source.withColumns(guarded) if guarded else source


def stream_failure(exception) -> Exception:
    """One line for a failed query: a bad file (unreadable, another schema, bad values) is bad input
    (exit 2) naming the file; anything else stays a failure (exit 1)."""
    text = " ".join(str(exception).split())
    resume = (
        "remove or fix it, then run the same command again: committed micro-batches stay as they are and "
        "the stream resumes after them."
    )
    marked = re.search(rf"{_BAD_ROW}: (file \S+ has (?:a null, NaN or infinite|an infinite) \S+)", text)
    if marked:
        return UserInputError(f"score_stream stopped: {marked.group(1)}: {resume}")
    unreadable = re.search(r"\[(FAILED_READ_FILE[.\w]*)\] Encountered error while reading file (.+?)\.(?:\s|$)", text)
    if unreadable:
        kind, path = unreadable.group(1), unreadable.group(2)
        column = re.search(r"reading Parquet column \[([^\]]+)\]", text)
        detail = (
            f"has {column.group(1) if column else 'a column'} of another type than the model expects"
            if "DATA_TYPE_MISMATCH" in kind
            else "is not readable parquet"
        )
        return UserInputError(f"score_stream stopped: file {path} {detail} ({kind}): {resume}")
    return RuntimeError(f"streaming query failed: {text[:500]}")


def run_stream(spark, params: StreamParams, model: resolve.ResolvedModel, poll_seconds: float = 0.5) -> dict:
    """Start the query and run it until the input is drained (available_now) or a SIGINT/SIGTERM."""
    try:
        return _run_stream(spark, params, model, poll_seconds)
    finally:
        release_checkpoint(params.checkpoint_path)


def _run_stream(spark, params: StreamParams, model: resolve.ResolvedModel, poll_seconds: float) -> dict:
    check_stream_input(spark, params, model)
    spark_model = scoring.load_spark_model(model)
    _record_identity(params, model)
    # ignoreMissingFiles: a bad file that stopped the stream can be removed, and the restart replays its
    # micro-batch without it (the sink's log keeps that exactly once).
    source = (
        spark.readStream.schema(resolve.spark_schema_for(model))
        .option("maxFilesPerTrigger", params.max_files_per_trigger)
        .option("ignoreMissingFiles", "true")
        .parquet(params.input_path)
    )
    scored = scoring.score_frame(spark_model, guard_values(source, model), model)
    query = (
        scored.writeStream.format("parquet")
        .option("path", params.output_path)
        .option("checkpointLocation", params.checkpoint_path)
        .outputMode("append")
        .trigger(**trigger_kwargs(params.trigger))
        .queryName("score_stream")
        .start()
    )
    tracking.set_tags(
        {
            **model.tags(),
            "input_path": params.input_path,
            "output_path": params.output_path,
            "checkpoint_path": params.checkpoint_path,
            "stream_query_id": str(query.id),
        }
    )

    stop_requested = threading.Event()
    stopped_by: list[int] = []

    def request_stop(signum, _frame):
        print(
            f"score_stream: {signal.Signals(signum).name} received, stopping after the current micro-batch "
            "state is safe (uncommitted work is redone on restart)",
            flush=True,
        )
        stopped_by.append(signum)
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    reporter = ProgressReporter(tracking.active_run_id(), params.checkpoint_path)
    started = time.perf_counter()
    try:
        last_collect = time.monotonic()
        while query.isActive and not stop_requested.is_set():
            try:
                query.awaitTermination(poll_seconds)
            except Exception:  # the query failed: query.exception() says why, below
                if query.exception() is None:
                    raise
                break
            reporter.report(query)
            if not gc.isenabled() and time.monotonic() - last_collect > 60:
                gc.collect()  # over Spark Connect the collector is off (see spark.get_spark): run it here, safely
                last_collect = time.monotonic()
        if stop_requested.is_set() and query.isActive:
            query.stop()
        reporter.report(query)
        if query.exception() is not None and not stop_requested.is_set():
            raise stream_failure(query.exception())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    seconds = time.perf_counter() - started
    summary = {
        "batches": len(reporter.seen),
        "rows_scored": reporter.rows,
        "seconds": seconds,
        "stopped_by_signal": int(stop_requested.is_set()),
        "skipped_files": len(reporter.skipped_files),
    }
    if reporter.skipped_files:
        tracking.log_dict({"skipped_files": reporter.skipped_files}, "stream/skipped_files.json")
    lat = sorted(reporter.latencies_ms)
    if lat:
        summary.update(
            {"latency_p50_ms": lat[len(lat) // 2], "latency_p95_ms": lat[min(len(lat) - 1, int(len(lat) * 0.95))]}
        )
    tracking.log_metrics(summary)
    if stopped_by:
        # A stop asked for, done cleanly: the committed batches stay and the same command resumes. The run
        # still ends as every interrupted entry point's does (KILLED; exit 130 for SIGINT, 143 for SIGTERM).
        print(
            f"score_stream: stopped by {signal.Signals(stopped_by[0]).name} after {summary['rows_scored']} rows "
            f"in {summary['batches']} micro-batches; the same command resumes from the checkpoint",
            flush=True,
        )
        raise Terminated() if stopped_by[0] == signal.SIGTERM else KeyboardInterrupt()
    return summary


SCORE_STREAM = EntryPoint(
    name="score_stream",
    script="score_stream.py",
    summary="Score a stream of parquet files.",
    params=StreamParams,
    job=run_stream,
    run_name=lambda p: f"score_stream {short_model_uri(p.model_uri)}",
    report=lambda p, summary: (
        f"score_stream: {summary['rows_scored']} rows in {summary['batches']} micro-batches, {summary['seconds']:.1f} s"
    ),
)
