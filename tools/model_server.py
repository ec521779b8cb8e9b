"""Model servers on 127.0.0.1 for the tests and the serving benchmark, stopped by PID: `mlflow models serve
-m <model> --env-manager local`, started on a free port and ready once /ping answers, and the project's
`serve` entry point (``python serve.py``), which binds port 0 itself and prints the URL it serves on.

MLflow passes no port 0 through to uvicorn, so a free port is picked first. Another process may take it
before the server binds it: the server is only taken as started once its own log says uvicorn runs on
that port (a /ping answered by someone else's server proves nothing), and it is started again on another
port when the bind failed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
ATTEMPTS = 3


class ServerDidNotStart(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (uvicorn and its workers), SIGKILL after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _pinged(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _attempt(model_uri: str, log_path: Path, env: dict, deadline: float) -> tuple[subprocess.Popen, str] | None:
    """One start on a fresh port: (process, URL) once serving, None if the port was taken meanwhile."""
    port = _free_port()
    offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:  # a file, not a pipe: a chatty server never blocks on a full pipe
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "-h",
                HOST,
                "-p",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url, bound = f"http://{HOST}:{port}", re.compile(rf"Uvicorn running on http://{re.escape(HOST)}:{port}\b")
    try:
        while time.monotonic() < deadline:
            text = log_path.read_bytes()[offset:].decode(errors="replace")
            if "address already in use" in text.lower():
                stop(process)
                return None
            if bound.search(text) and process.poll() is None and _pinged(url):
                return process, url
            if process.poll() is not None:
                raise ServerDidNotStart(f"the model server exited ({process.returncode}): {text[-3000:]}")
            time.sleep(0.25)
        raise ServerDidNotStart(f"the model server was not ready in time: {text[-3000:]}")
    except BaseException:
        stop(process)
        raise


def start(
    model_uri: str, log_path: Path, env: dict | None = None, timeout: float = 180
) -> tuple[subprocess.Popen, str]:
    """Serve ``model_uri``; return (process, URL) once /ping answers. The output goes to ``log_path``."""
    env = {**(env or os.environ), "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    deadline = time.monotonic() + timeout
    for _ in range(ATTEMPTS):
        started = _attempt(model_uri, Path(log_path), env, deadline)
        if started:
            return started
    raise ServerDidNotStart(f"no free port held for {ATTEMPTS} attempts: see {log_path}")


@contextlib.contextmanager
def served(model_uri: str, log_path: Path, env: dict | None = None, timeout: float = 180):
    """The served model's URL for the duration of the block; the server stopped by PID after it."""
    process, url = start(model_uri, log_path, env, timeout)
    try:
        yield url
    finally:
        stop(process)


SERVE_SCRIPT = Path(__file__).resolve().parents[1] / "serve.py"
_SERVING_ON = re.compile(r"serve: serving \S+ on (http://[0-9.]+:\d+)")


def start_serve(
    model_uri: str, log_path: Path, env: dict | None = None, options: tuple = (), timeout: float = 180
) -> tuple[subprocess.Popen, str]:
    """``python serve.py --model_uri <model_uri> --port 0 <options>``; (process, URL) once /ping answers."""
    command = [sys.executable, str(SERVE_SCRIPT), "--model_uri", model_uri, "--port", "0", *options]
    return start_serving_command(command, log_path, env, timeout=timeout)


def start_serving_command(
    command: list[str], log_path: Path, env: dict | None = None, cwd=None, timeout: float = 180
) -> tuple[subprocess.Popen, str]:
    """Run ``command`` (``serve`` however launched, on port 0) in a process group of its own; (process, URL)
    once it has said where it serves and /ping answers there."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            text = Path(log_path).read_text(errors="replace")
            found = _SERVING_ON.search(text)
            if found and _pinged(found.group(1)):
                return process, found.group(1)
            if process.poll() is not None:
                raise ServerDidNotStart(f"serve exited ({process.returncode}): {text[-3000:]}")
            time.sleep(0.1)
        raise ServerDidNotStart(f"serve was not ready in time: {Path(log_path).read_text()[-3000:]}")
    except BaseException:
        stop(process)
        raise


def post_invocations(url: str, body: bytes, timeout: float = 30):
    """POST ``body`` (JSON) to ``url``/invocations: (status, parsed JSON answer) or (status, error text)."""
    import json

    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
