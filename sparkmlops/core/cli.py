"""Running an entry point's click command: every outcome ends as one clear line and its exit code.

The exit codes are core.errors' (0 success, 1 failure, 2 bad input, 3 drift, 4 not reproduced, 130
interrupted, 143 terminated); an unexpected exception keeps its traceback above the last line.
MLflow passes each ``-P name=value`` as ``--name value``; names the script does not declare reach
click as unknown options and are refused, never silently ignored.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback

import click

from sparkmlops.core import tracking
from sparkmlops.core.errors import INTERRUPTED_EXIT_CODE, TERMINATED_EXIT_CODE, Outcome, Terminated


def _parameter_names(command: click.Command) -> list[str]:
    return [p.name for p in command.params if isinstance(p, click.Option)]


def _exit(line: str, code: int, stream=None) -> None:
    print(line, file=stream or sys.stderr, flush=True)
    sys.exit(code)


def fail(message: str, code: int) -> None:
    _exit(f"error: {message}", code)


def run(command: click.Command, args: list[str] | None = None) -> None:
    """Invoke ``command`` (a script's ``main``) with clean error reporting. SIGTERM is raised as
    ``Terminated`` while it runs, so a job a scheduler stops ends its run KILLED instead of leaving it
    RUNNING."""
    previous = _raise_on_sigterm()
    try:
        _run(command, args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_on_sigterm():
    """Install the SIGTERM handler (only the main thread can); the handler it replaces, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, terminate)


def _run(command: click.Command, args: list[str] | None) -> None:
    try:
        command.main(args=args, standalone_mode=False)
    except click.NoSuchOption as exc:
        name = exc.option_name.lstrip("-")
        refuse(
            f"unknown parameter '{name}' for {command.name}: valid parameters are "
            f"{', '.join(_parameter_names(command))}."
        )
    except click.UsageError as exc:
        refuse(f"{exc.format_message()} (entry point {command.name}).")
    except click.ClickException as exc:
        refuse(exc.format_message())
    except click.exceptions.Abort as exc:  # click turns Ctrl-C (and so SIGTERM's Terminated) into Abort
        if isinstance(exc.__cause__, Terminated):
            fail("terminated.", TERMINATED_EXIT_CODE)
        fail("aborted.", INTERRUPTED_EXIT_CODE)
    except Outcome as exc:
        # a finished outcome (drift found) is a result, printed where results go
        _exit(exc.line(), exc.exit_code, sys.stdout if exc.run_status == "FINISHED" else sys.stderr)
    except Terminated:
        fail("terminated.", TERMINATED_EXIT_CODE)
    except KeyboardInterrupt:
        fail("interrupted.", INTERRUPTED_EXIT_CODE)
    except Exception as exc:  # a bug or an environment failure: keep the traceback, end with one line
        traceback.print_exc()
        text = " ".join(str(exc).split())[:500] or type(exc).__name__
        fail(f"{command.name} failed: {type(exc).__name__}: {text}", 1)


def refuse(message: str) -> None:
    """Bad options, refused by click before the entry point starts: exit 2. Under ``mlflow run`` the run
    already exists (MLFLOW_RUN_ID); it gets the ``exit_code`` and ``error`` tags every run has, and ends
    FAILED, as a refusal inside the entry point leaves it."""
    print(f"error: {message}", file=sys.stderr, flush=True)  # first: the store may be slow or down
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        with contextlib.suppress(Exception):
            tracking.end_refused_run(run_id, message, 2)
    sys.exit(2)


# Options several entry points share (same name, default and help everywhere).
spark_master_option = click.option(
    "--spark_master",
    default="",
    help="Spark master URL (local[N], spark://host:7077, sc://host:15002 for Spark Connect, ...); "
    "empty = from the environment (SPARK_REMOTE, PYSPARK_SUBMIT_ARGS, spark-defaults.conf), else local[*].",
)
model_uri_option = click.option(
    "--model_uri", default="", help="runs:/<id>/model, models:/<name>@<alias>, models:/<name>/<n>, or a path."
)
data_path_option = click.option(
    "--data_path", default="", help="Parquet (or .csv) file or folder; empty = generated data."
)
label_col_option = click.option("--label_col", default="price", show_default=True, help="Numeric column to predict.")
train_fraction_option = click.option(
    "--train_fraction",
    type=float,
    default=0.8,
    show_default=True,
    help="Share of rows for training; the rest is the test split.",
)
register_as_option = click.option(
    "--register_as",
    default="",
    help="Registered model name: the logged model becomes its newest version; empty = do not register.",
)
