"""The HTTP side of `serve`: MLflow's scoring routes on Starlette, and Prometheus metrics.

``POST /invocations`` is answered by the fast path when it can (on the event loop for small requests:
sub-millisecond work, no thread hop) and by MLflow's own handler in a worker thread otherwise. ``GET
/ping`` and ``/health`` answer 200 once a model is loaded, ``/version`` MLflow's version, as ``mlflow
models serve`` does; ``/metrics`` the Prometheus text format. Every /invocations response carries
``X-Model-Version`` (the registry version that answered, empty outside the registry) and ``X-Model-Uri``
(the URI it was loaded from).
"""

from __future__ import annotations

import contextlib
import os
import time

import prometheus_client
from prometheus_client import multiprocess
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Route

from sparkmlops.core import mlflow_models
from sparkmlops.serve.model_follower import ModelFollower, ServedModel

# Requests up to this size (a few hundred rows) are answered on the event loop: a thread hop costs more.
INLINE_BYTES = 64 * 1024
# Single-request latencies are a few milliseconds; a Spark model's are ~100 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """The server's Prometheus metrics. With several workers (PROMETHEUS_MULTIPROC_DIR set before they
    start) each worker writes its own files and /metrics adds them up."""

    def __init__(self):
        self.requests = prometheus_client.Counter(
            "sparkmlops_serve_requests", "Requests to /invocations, by HTTP status and the path that answered.",
            ["status", "path"],
        )  # fmt: skip
        self.latency = prometheus_client.Histogram(
            "sparkmlops_serve_request_duration_seconds",
            "Time from a request's body received to its response ready, in the server.",
            buckets=LATENCY_BUCKETS,
        )
        self.version = prometheus_client.Gauge(
            "sparkmlops_serve_model_version", "The registry version serving (0 outside the registry).",
            multiprocess_mode="liveall",
        )  # fmt: skip
        self.swaps = prometheus_client.Counter(
            "sparkmlops_serve_model_swaps", "Alias moves followed, by outcome (swapped, refused).", ["outcome"]
        )
        self.fast_ok = self.requests.labels("200", "fast")

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = prometheus_client.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return prometheus_client.generate_latest(registry)
        return prometheus_client.generate_latest()

    def served(self, model: ServedModel) -> None:
        self.version.set(float(model.version) if model.version.isdigit() else 0)


def create_app(follower: ModelFollower, metrics: Metrics) -> Starlette:
    mlflow_version = mlflow_models.mlflow_version()

    def headers(model: ServedModel) -> dict[str, str]:
        return {"X-Model-Version": model.version, "X-Model-Uri": model.uri}

    async def ping(request):
        return Response("\n", 200 if follower.current is not None else 404, media_type="application/json")

    async def version(request):
        return Response(mlflow_version, media_type="application/json")

    async def metrics_text(request):
        return Response(metrics.exposition(), media_type=prometheus_client.CONTENT_TYPE_LATEST)

    async def invocations(request):
        model = follower.current  # read once: a swap during this request does not change who answers it
        body = await request.body()
        began = time.perf_counter()
        content_type = request.headers.get("content-type", "")
        if len(body) <= INLINE_BYTES:
            fast = model.answer_fast(body, content_type)
        else:  # on the event loop it would hold /ping and every other request while it runs
            fast = await run_in_threadpool(model.answer_fast, body, content_type)
        if fast is not None:
            metrics.latency.observe(time.perf_counter() - began)
            metrics.fast_ok.inc()
            return Response(fast, media_type="application/json", headers=headers(model))
        status, answer, media_type = await run_in_threadpool(model.answer_as_mlflow, body, content_type)
        metrics.latency.observe(time.perf_counter() - began)
        metrics.requests.labels(str(status), "mlflow").inc()
        return Response(answer, status, media_type=media_type, headers=headers(model))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        follower.start()
        try:
            yield
        finally:
            follower.stop()

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/invocations", invocations, methods=["POST"]),
            Route("/ping", ping, methods=["GET"]),
            Route("/health", ping, methods=["GET"]),
            Route("/version", version, methods=["GET"]),
            Route("/metrics", metrics_text, methods=["GET"]),
        ],
    )
    app.state.follower = follower
    return app
