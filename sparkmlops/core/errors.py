"""How an entry point can end: one exception type per outcome, carrying the exit code the script ends
with and the status its MLflow run is left in (README, "Exit codes").

    outcome                                           type                 exit  run
    success                                           (none)               0     FINISHED
    a failure: a bug, the environment, storage        any other exception  1     FAILED
    a failure the job diagnosed itself                JobFailed            1     FAILED
    bad input the user can fix                        UserInputError       2     FAILED
    drift found (check_drift)                         DriftFound           3     FINISHED
    not reproduced (reproduce)                        NotReproduced        4     FAILED
    interrupted (Ctrl-C, SIGINT)                      KeyboardInterrupt    130   KILLED
    terminated (SIGTERM)                              Terminated           143   KILLED

Jobs and scripts raise; ``core.tracking.tracked_run`` ends the run with the status and tags the exit
code; ``core.cli.run`` prints the one line and exits with the code. Nothing else calls ``sys.exit``.
"""

from __future__ import annotations

INTERRUPTED_EXIT_CODE = 130
TERMINATED_EXIT_CODE = 143  # 128 + SIGTERM, as a shell reports a process the signal ended


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or `kill` stopping the job): handled as Ctrl-C is (the run ends KILLED, children
    too), with its own exit code. A KeyboardInterrupt, so every ``except KeyboardInterrupt`` treats it alike."""


class Outcome(Exception):
    """An ending the project names: its message is one line (printed as ``error: <message>``)."""

    exit_code = 1
    run_status = "FAILED"

    def __init__(self, message: str):
        # Multi-line messages would break the "one clear line" contract; fold them.
        super().__init__(" ".join(str(message).split()))

    def line(self) -> str:
        return f"error: {self}"


class UserInputError(Outcome):
    """A problem the user can fix (a parameter, a path, a schema, a value); the message says what and how."""

    exit_code = 2


class JobFailed(Outcome):
    """The job ran and diagnosed its own failure (every trial failed, the export differs from Spark):
    one line, no traceback, nothing half-written."""

    exit_code = 1


class DriftFound(Outcome):
    """check_drift found drift: the check itself succeeded (run FINISHED), the code tells a scheduler.
    Its line is the verdict, on stdout like a success's summary."""

    exit_code = 3
    run_status = "FINISHED"

    def line(self) -> str:
        return f"check_drift: {self}"


class NotReproduced(Outcome):
    """reproduce re-ran the run, and its metrics differ from the original's beyond the tolerance."""

    exit_code = 4


def exit_code_of(exc: BaseException) -> int:
    """The exit code a script ends with for ``exc``."""
    if isinstance(exc, Terminated):
        return TERMINATED_EXIT_CODE
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED_EXIT_CODE
    if isinstance(exc, SystemExit):  # click's own exits (--help, usage errors) when not in standalone mode
        return exc.code if isinstance(exc.code, int) else 1
    return exc.exit_code if isinstance(exc, Outcome) else 1


def run_status_of(exc: BaseException) -> str:
    """The status a run ends with when ``exc`` ends it: Ctrl-C and SIGTERM are stops asked for (KILLED, as
    MLflow marks them); drift is a finished check; everything else FAILED."""
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED"
    return exc.run_status if isinstance(exc, Outcome) else "FAILED"
