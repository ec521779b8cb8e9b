"""The `serve` job: a model behind MLflow's scoring protocol, fast for an export, following a registry alias.

uvicorn serves the Starlette app of serve.serving_app on ``host:port`` (127.0.0.1 unless told otherwise),
with ``workers`` processes sharing one socket. Each process loads the model, checks it with its input
example and, given ``models:/<name>@<alias>``, follows the alias (serve.model_follower). SIGTERM or Ctrl-C
stops it gracefully: no new connections, requests in flight answered, then exit 0 and the run FINISHED.
No Spark starts here; a Spark model's pyfunc starts its own local session, at its own speed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass

import uvicorn
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import SIGNALS as SUPERVISOR_SIGNALS

from sparkmlops.core import tracking
from sparkmlops.core.entry_points import EntryPoint, param
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.jobs import short_model_uri
from sparkmlops.data import parameters
from sparkmlops.inference import resolve
from sparkmlops.serve import model_follower, serving_app
from sparkmlops.serve.model_follower import ModelFollower, ServedModel, say

WORKER_SETTINGS = "SPARKMLOPS_SERVE_SETTINGS"  # how worker processes learn what to serve
GRACEFUL_SHUTDOWN_SECONDS = 30
WORKER_LIVENESS_SECONDS = 300  # how long the supervisor waits for a worker's answer (it loads the model first)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class ServeParams:
    model_uri: str = parameters.model_uri(
        "models:/<name>@<alias> (followed: a promotion is served without a restart), models:/<name>/<n>, "
        "runs:/<id>/model or a path; export_onnx's models answer in milliseconds."
    )
    host: str = param("127.0.0.1", "Address to bind; 0.0.0.0 serves other machines too.")
    port: int = param(5001, "Port to bind (0 = a free one, printed).")
    workers: int = param(1, "Server processes sharing the port, each with its own copy of the model.")
    poll_seconds: float = param(10.0, "How often to ask the registry where a models:/<name>@<alias> points; 0 = never.")

    def validate(self) -> resolve.ResolvedModel:
        if not 0 <= self.port <= 65535:
            raise UserInputError(f"port={self.port} is not a TCP port: pass 0 to 65535 (0 = a free one).")
        if self.workers < 1:
            raise UserInputError(f"workers={self.workers}: pass 1 or more.")
        if self.poll_seconds < 0:
            raise UserInputError(f"poll_seconds={self.poll_seconds}: pass 0 (never) or more.")
        if not self.host.strip():
            raise UserInputError("host is empty: pass 127.0.0.1 (this machine only) or 0.0.0.0.")
        return resolve.resolve_model(self.model_uri, require_flavor="python_function")

    def as_dict(self) -> dict:
        return asdict(self)


def warn_if_spark(model: resolve.ResolvedModel) -> None:
    if "spark" in model.flavors:
        print(
            f"warning: {model.uri} is a Spark model: its pyfunc answers through a local Spark session, in "
            "hundreds of milliseconds a request; export it (mlflow run . -e export_onnx -P model_uri=...) and "
            "serve the export for milliseconds.",
            file=sys.stderr,
            flush=True,
        )


def build_app(settings: dict):
    """The app one server process runs: the model loaded and checked, the alias followed, metrics on."""
    metrics = serving_app.Metrics()
    run_id = settings.get("run_id", "")

    def on_swap(model: ServedModel) -> None:
        metrics.served(model)
        metrics.swaps.labels("swapped").inc()
        if run_id and model.version.isdigit():
            with contextlib.suppress(Exception):  # the tracking store being down does not stop serving
                tracking.log_step_metrics(run_id, {"served_model_version": float(model.version)}, follower.swaps)

    def on_refusal(version: str) -> None:
        metrics.swaps.labels("refused").inc()

    follower = ModelFollower(settings["model_uri"], settings["poll_seconds"], on_swap, on_refusal)
    metrics.served(follower.load_first(settings["load_uri"], settings["version"]))
    return serving_app.create_app(follower, metrics)


def worker_app():
    """uvicorn's app factory in each worker process (settings from the environment the job set)."""
    settings = json.loads(os.environ[WORKER_SETTINGS])
    tracking.set_tracking_uri(settings["tracking_uri"])
    return build_app(settings)


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: the job's handlers stop it (and do not re-raise
    the signal afterwards, which would end the job as terminated instead of stopped)."""

    def capture_signals(self):
        return contextlib.nullcontext()


@contextlib.contextmanager
def _signal_handlers_kept():
    """Whatever handlers the block installs (uvicorn's supervisor installs its own), the ones before it after."""
    saved = {sig: signal.getsignal(sig) for sig in SUPERVISOR_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _bound_socket(config: uvicorn.Config, params: ServeParams):
    """The listening socket, or one line: uvicorn reports a port in use by exiting with its own code."""
    try:
        return config.bind_socket()
    except SystemExit:
        raise UserInputError(
            f"cannot listen on {params.host}:{params.port} (in use, or not an address of this machine): "
            "pass another -P port (0 = a free one) or -P host."
        ) from None


def serve(params: ServeParams, model: resolve.ResolvedModel) -> dict:
    warn_if_spark(model)
    settings = {
        "model_uri": params.model_uri,
        "load_uri": model.load_uri,
        "version": model.version or "",
        "poll_seconds": params.poll_seconds,
        "run_id": tracking.active_run_id(),
        "tracking_uri": tracking.tracking_uri(),
    }
    tracking.set_tags({"served_model_uri": model.load_uri, "served_model_version": model.version or ""})
    options = dict(
        host=params.host,
        port=params.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        timeout_worker_healthcheck=WORKER_LIVENESS_SECONDS,
    )
    if params.workers == 1:
        config = uvicorn.Config(None, **options)
        sock = _bound_socket(config, params)
        url = _url(sock)  # the socket is closed once the server stops
        config.app = app = build_app(settings)  # loaded and checked before the line saying where it serves
        server = _Server(config)
        say(f"serving {params.model_uri} on {url} (1 worker); stop with SIGTERM or Ctrl-C.")
        previous = {sig: signal.signal(sig, lambda *_: setattr(server, "should_exit", True)) for sig in STOP_SIGNALS}
        try:
            server.run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return {"url": url, "swaps": app.state.follower.swaps}
    # Workers are new processes: each imports the app factory and reads its settings from the environment.
    config = uvicorn.Config("sparkmlops.serve.serve:worker_app", factory=True, workers=params.workers, **options)
    sock = _bound_socket(config, params)
    url = _url(sock)
    # Here first, so a model that cannot load or answer fails the job instead of each worker's start. Loading
    # puts the model's own code folder first on sys.path, which the workers would inherit: it is undone.
    search_path = list(sys.path)
    try:
        model_follower.smoke_test(model_follower.load(settings["load_uri"], settings["version"]))
    finally:
        sys.path[:] = search_path
    with tempfile.TemporaryDirectory(prefix="sparkmlops-serve-metrics-") as metrics_dir:
        environment = {WORKER_SETTINGS: json.dumps(settings), "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        os.environ.update(environment)
        try:
            with _signal_handlers_kept():
                supervisor = Multiprocess(config, sockets=[sock])  # its handlers: SIGTERM stops the workers gracefully
                say(f"serving {params.model_uri} on {url} ({params.workers} workers); stop with SIGTERM or Ctrl-C.")
                supervisor.run()
        finally:
            for name in environment:
                os.environ.pop(name, None)
    return {"url": url, "swaps": None}


def _url(sock) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


def _report(params: ServeParams, result: dict) -> str:
    return f"serve: stopped gracefully ({result['url']})."


SERVE = EntryPoint(
    name="serve",
    script="serve.py",
    summary="Serve a model over MLflow's scoring protocol, following a registry alias; fast for export_onnx models.",
    params=ServeParams,
    job=lambda spark, params, model: serve(params, model),
    run_name=lambda p: f"serve {short_model_uri(p.model_uri)}",
    report=_report,
    needs_spark=lambda model: False,
)
