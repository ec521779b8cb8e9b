"""The error model: each outcome's exit code, its one line, and the status it leaves the run in,
through the same click wrapper and tracked run every script uses, on a real tracking store."""

import click
import pytest
from conftest import newest_run

from sparkmlops.core import cli, errors, tracking


def _command(exc):
    @click.command(name="demo")
    def main():
        with tracking.tracked_run("demo outcome"):
            raise exc

    return main


@pytest.mark.parametrize(
    "exc, code, status, stream, line",
    [
        (
            errors.UserInputError("data_path 'x' does not exist"),
            2,
            "FAILED",
            "err",
            "error: data_path 'x' does not exist",
        ),
        (errors.JobFailed("all 3 trials failed"), 1, "FAILED", "err", "error: all 3 trials failed"),
        (
            errors.DriftFound("drift: 2 of 34 features drifted"),
            3,
            "FINISHED",
            "out",
            "check_drift: drift: 2 of 34 features drifted",
        ),
        (
            errors.NotReproduced("not reproduced: rmse differs"),
            4,
            "FAILED",
            "err",
            "error: not reproduced: rmse differs",
        ),
        (KeyboardInterrupt(), 130, "KILLED", "err", "error: aborted."),  # click reports Ctrl-C as Abort
        (RuntimeError("storage timed out"), 1, "FAILED", "err", "error: demo failed: RuntimeError: storage timed out"),
    ],
)
def test_each_outcome_has_its_exit_code_line_and_run_status(client, capsys, exc, code, status, stream, line):
    with pytest.raises(SystemExit) as info:
        cli.run(_command(exc), [])
    assert info.value.code == code
    captured = capsys.readouterr()
    assert (captured.out if stream == "out" else captured.err).strip().splitlines()[-1] == line
    run = newest_run(client)
    assert run.info.run_name == "demo outcome"
    assert run.info.status == status
    assert run.data.tags["exit_code"] == str(code)
    assert ("error" in run.data.tags) == (status != "FINISHED")


def test_a_message_over_several_lines_is_one_line():
    assert str(errors.UserInputError("first\n  second\tthird")) == "first second third"


def test_success_is_tagged_exit_code_0(client):
    with tracking.tracked_run("demo success") as run:
        pass
    assert client.get_run(run.info.run_id).data.tags["exit_code"] == "0"
