"""reproduce against the catalogue of broken inputs (tests/e2e/bad_inputs.py), apart from the other entry
points so that the two modules run side by side: each of its pairs re-runs a train run in a process of
its own (`mlflow.projects.run` of the committed checkout), where the others stay in-process."""

from __future__ import annotations

import pytest
from bad_inputs import pairs
from conftest import commit_all, copy_project
from test_bad_inputs import _original_run, base_data, case_inputs, check_outcome, folder  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """This checkout's files committed in a repository of their own: (folder, commit) for the original runs."""
    work = copy_project(tmp_path_factory.mktemp("committed") / "project")
    return str(work), commit_all(work)


@pytest.mark.parametrize("case_id, entry", pairs(["reproduce"]))
def test_broken_input(spark, client, base_data, case_inputs, project, tmp_path, case_id, entry):  # noqa: F811
    run_id, path = _original_run(spark, client, case_id, case_inputs(case_id), base_data, project, tmp_path)
    command = ["reproduce.py", "--run_id", run_id, "--project_uri", project[0]]
    check_outcome(spark, client, case_id, entry, path, "", command)
