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
from sparkmlops.core.jobs import run_entry_point


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
        while _redeliveries:
            _redeliveries.pop().cancel()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_on_sigterm():
    """Install the SIGTERM handler (only the main thread can); the handler it replaces, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None

    deferred = []

    def terminate(signum, frame):
        if _inside_tracking_store(frame) and len(deferred) < SIGTERM_MAX_DEFERRALS:
            # Raising here would abandon the store's transaction with its lock held (SQLite: the run could then
            # not be ended, "database is locked"): let the write finish, and have the signal delivered again.
            deferred.append(signum)
            redelivery = threading.Timer(SIGTERM_REDELIVERY_SECONDS, os.kill, (os.getpid(), signal.SIGTERM))
            redelivery.daemon = True
            _redeliveries.append(redelivery)
            redelivery.start()
            return
        raise Terminated()

    return signal.signal(signal.SIGTERM, terminate)


SIGTERM_REDELIVERY_SECONDS = 0.05
_redeliveries: list[threading.Timer] = []  # cancelled when the command ends: the handler is gone by then
SIGTERM_MAX_DEFERRALS = 40  # two seconds: a scheduler's grace period is longer, a database write shorter
# MLflow's database stores and the library under them (not its artifact or REST stores: an upload or a
# retried HTTP call can be interrupted safely, and may take long)
_STORE_CODE = tuple(
    os.path.join(*parts)
    for parts in (
        (os.sep, "sqlalchemy", ""),
        ("mlflow", "store", "db", ""),
        ("mlflow", "store", "tracking", "sqlalchemy_store.py"),
        ("mlflow", "store", "model_registry", "sqlalchemy_store.py"),
    )
)


def _inside_tracking_store(frame) -> bool:
    """Whether the interrupted code is inside MLflow's database store (or SQLAlchemy under it)."""
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in _STORE_CODE):
            return True
        frame = frame.f_back
    return False


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


def command(entry_point) -> click.Command:
    """The script's click command, made from the entry point's declaration (core.entry_points): one option
    per parameter, with its type, default, help and choices; running it runs the entry point and prints the
    line its declaration reports."""

    def callback(**options):
        master = options.pop("spark_master")
        params = entry_point.params(**options)
        result = run_entry_point(entry_point, params, master)
        line = entry_point.report(params, result)
        if line:
            print(line, flush=True)

    options = [
        click.Option([f"--{p.name}"], type=p.type, default=p.default, show_default=p.default != "", help=p.help)
        for p in entry_point.parameters()
    ]
    return click.Command(entry_point.name, callback=callback, params=options, help=entry_point.summary)
