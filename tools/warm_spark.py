"""A warm local Spark for the inner loop: one Spark Connect server kept alive between commands, so that
each `mlflow run` / `python <script>.py` skips the JVM's start and runs on an already-compiled JIT.

    python -m tools.warm_spark up      # make spark-up: start it (or find it running), say how to use it
    python -m tools.warm_spark down    # make spark-down: stop it

This is PySpark's own opt-in (``SPARK_LOCAL_CONNECT_REUSE=1`` with ``SPARK_REMOTE=local[*]``): the first
session starts a server through ``sbin/start-connect-server.sh`` and records its URL, token and PID in a
per-user discovery file; later sessions reconnect to it, each with its own server-side session. ``down`` is
PySpark's ``python -m pyspark.sql.connect.local_server --stop``, which signals the recorded PID only while
it is still that server; this then waits until that process has exited.
"""

from __future__ import annotations

import os
import time

import click

from sparkmlops.core import compat
from tools import processes

ENVIRONMENT = {"SPARK_REMOTE": "local[*]", "SPARK_LOCAL_CONNECT_REUSE": "1"}


def start() -> dict:
    """Start the warm server, or find the one running; returns {"url", "pid", "master"}."""
    os.environ.setdefault("SPARK_REMOTE", ENVIRONMENT["SPARK_REMOTE"])  # SPARK_REMOTE=local[4] make spark-up
    os.environ["SPARK_LOCAL_CONNECT_REUSE"] = "1"
    if not os.environ["SPARK_REMOTE"].startswith("local"):
        raise click.ClickException(
            f"SPARK_REMOTE is {os.environ['SPARK_REMOTE']}: a warm local Spark needs local[*] (or local[N]); "
            "unset it, or use that server directly."
        )
    from sparkmlops.core.spark import end_connect_session, get_spark

    # get_spark gives the server this Python for its workers (PYSPARK_PYTHON) and checks Java first
    spark = get_spark("warm-spark")
    master = spark.conf.get("spark.master")  # a server already running keeps the master it started with
    end_connect_session(spark)
    server = compat.warm_local_connect_server()
    if server is None:
        raise click.ClickException("the Spark Connect server did not record itself")
    return {**server, "master": master}


def stop(timeout: float = 60.0) -> int | None:
    """Stop the recorded server and wait for it to exit; returns its PID, or None when none was running."""
    server = compat.warm_local_connect_server()
    if not compat.stop_warm_local_connect_server() or server is None:
        return None
    deadline = time.monotonic() + timeout
    while processes.running(server["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return server["pid"]


@click.group()
def main() -> None:
    """A warm local Spark Connect server for repeated runs."""


@main.command()
def up() -> None:
    server = start()
    exports = " ".join(f"{k}='{os.environ[k]}'" for k in ENVIRONMENT)
    click.echo(f"warm Spark: Spark Connect server at {server['url']} (pid {server['pid']}, master {server['master']}).")
    click.echo(f"Use it from a shell with: export {exports}   (make spark-down stops it)")


@main.command()
def down() -> None:
    pid = stop()
    click.echo("no warm Spark was running" if pid is None else f"warm Spark stopped (pid {pid})")


if __name__ == "__main__":
    main()
