"""reproduce: a committed copy of the project trains a run; reproduce re-runs it at its commit and compares.

The copy (its own git repository in a temp dir) keeps these tests independent of the state of the
working tree they are run from: runs made there have git_dirty=false unless a test dirties it.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
from conftest import (
    EXPERIMENT,
    GIT,
    PROJECT_ROOT,
    assert_refused,
    commit_all,
    copy_project,
    last_line,
    run_entry,
    script_in_process,
)

from sparkmlops.core import tracking
from sparkmlops.core.errors import UserInputError
from sparkmlops.reproduce import reproduce as reproduce_reproduce
from sparkmlops.reproduce.code_source import clone_at, find_code_source

SMALL = ["--num_trees", "5", "--max_depth", "3"]
REGISTERED = "reproduce-test-price"
ABSENT_COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a commit of no repository here


def script(project, name: str, *options: str):
    """``python <project>/<name>`` from the project's folder: the copy's code and git state."""
    return run_entry([sys.executable, str(project / name), *options], cwd=project)


def run_id_in(stdout: str) -> str:
    match = re.search(r"run_id=([0-9a-f]{32})", stdout)
    assert match, stdout[-2000:]
    return match.group(1)


@pytest.fixture(scope="module")
def project(tmp_path_factory, spark):
    """(committed project copy, its commit, data path, the id of a train run made there on that data)."""
    from sparkmlops.data.generators import generate_airbnb
    from sparkmlops.data.writing import write_parquet_atomically

    root = tmp_path_factory.mktemp("reproduce")
    work = copy_project(root / "work")
    sha = commit_all(work)
    data = str(root / "listings.parquet")
    write_parquet_atomically(generate_airbnb(spark, 2000, 42, n_partitions=1), data)
    # registered, as a run users want to reproduce often is: the reproduction must not register again
    result = script(work, "train.py", "--data_path", data, *SMALL, "--register_as", REGISTERED)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, sha, data, run_id_in(result.stdout)


def reproductions_of(client, run_id: str) -> list:
    from mlflow.entities import ViewType

    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(experiments, filter_string=f"tags.reproduction_of = '{run_id}'")


def reproduce_run_of(client, run_id: str):
    runs = client.search_runs(
        [client.get_run(run_id).info.experiment_id],
        filter_string=f"tags.original_run_id = '{run_id}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0]


@pytest.mark.process
def test_fresh_run_is_reproduced_bit_identically(client, project):
    import mlflow
    import pandas as pd

    work, sha, _, original_id = project
    original = client.get_run(original_id)
    assert original.data.tags["git_commit"] == sha and original.data.tags["git_dirty"] == "false"
    result = script(work, "reproduce.py", "--run_id", original_id)
    assert result.returncode == 0, result.stderr[-4000:]
    assert re.match(r"reproduce: reproduced: \d+ metrics bit-identical \(run [0-9a-f]{32}\)$", last_line(result.stdout))
    # the code came from the checkout reproduce ran from (it has the commit): printed, and tagged below
    top = subprocess.run(
        ["git", "-C", str(work), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert f"reproduce: code from {top} at commit {sha}\n" in result.stdout, result.stdout[-2000:]

    [reproduced] = reproductions_of(client, original_id)
    assert reproduced.info.status == "FINISHED"
    assert reproduced.info.experiment_id == original.info.experiment_id
    tags = reproduced.data.tags
    assert tags["git_commit"] == sha and tags["git_dirty"] == "false" and tags["entry_point"] == "train"
    assert tags["data_digest"] == original.data.tags["data_digest"]
    for name in ("num_trees", "max_depth", "seed", "train_fraction", "data_path", "label_col"):
        assert reproduced.data.params[name] == original.data.params[name], name
    for name in ("rmse", "mae", "r2", "train_rows", "test_rows"):
        assert reproduced.data.metrics[name] == original.data.metrics[name], f"{name} is not bit-identical"
    # the original registered version 1; a reproduction registers nothing
    assert original.data.tags["registered_model_version"] == "1"
    assert "registered_model" not in tags and tracking.run_parameters(reproduced)["register_as"] == ""
    assert [str(v.version) for v in client.search_model_versions(f"name = '{REGISTERED}'")] == ["1"]

    parent = reproduce_run_of(client, original_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["reproduced_run_id"] == reproduced.info.run_id
    assert parent.data.tags["code_source"] == top
    assert tags["reproduced_by"] == parent.info.run_id
    assert parent.data.metrics["metrics_differing"] == 0 and parent.data.metrics["max_abs_difference"] == 0
    report = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="reproduction/metrics.csv")
    )
    rows = report.set_index("metric")
    assert rows.loc["rmse", "original"] == original.data.metrics["rmse"] and rows.loc["rmse", "difference"] == 0
    assert not rows.loc["fit_seconds", "compared"], "wall-clock time is reported, never compared"
    assert parent.data.metrics["metrics_compared"] == int(rows["compared"].sum()) >= 6
    libraries = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=parent.info.run_id, artifact_path="reproduction/library_versions.csv"
        )
    )
    assert set(libraries["library"]) == {"python", "pyspark", "mlflow", "pandas", "java"}
    assert (libraries["original"] == libraries["reproduced"]).all()


@pytest.mark.process
def test_changed_data_is_detected_before_any_training(client, project, spark, tmp_path):
    """Rows dropped and a column added since the run: refused before re-running, naming both; with
    allow_data_change the re-run happens, its metrics differ, and reproduce ends FAILED (exit 4)."""
    import shutil

    from pyspark.sql import functions as F

    work, _, data, original_id = project
    original = client.get_run(original_id)
    rows = int(original.data.metrics["train_rows"] + original.data.metrics["test_rows"])
    saved = tmp_path / "saved"
    shutil.copytree(data, saved)
    changed = tmp_path / "changed"
    spark.read.parquet(str(saved)).limit(rows - 100).withColumn("extra_col", F.lit(1.0)).write.parquet(str(changed))
    before = len(reproductions_of(client, original_id))
    shutil.rmtree(data)
    shutil.copytree(changed, data)
    try:
        result = script(work, "reproduce.py", "--run_id", original_id)
        line = last_line(result.stderr)
        assert result.returncode == 2 and line.startswith("error: data changed since run"), result.stderr[-3000:]
        assert f"rows {rows} -> {rows - 100}" in line and "columns added: extra_col" in line
        assert "allow_data_change=true" in line
        assert len(reproductions_of(client, original_id)) == before, "a refused reproduction re-ran the run"
        assert reproduce_run_of(client, original_id).info.status == "FAILED"

        result = script(work, "reproduce.py", "--run_id", original_id, "--allow_data_change", "true")
        assert result.returncode == 4, f"expected 4, not reproduced (README: exit codes): {result.stderr[-3000:]}"
        assert last_line(result.stderr).startswith("error: not reproduced:")
        parent = reproduce_run_of(client, original_id)
        assert parent.info.status == "FAILED" and parent.data.metrics["metrics_differing"] >= 1
        assert "rows" in parent.data.tags["data_changes"]
        reproduced = client.get_run(parent.data.tags["reproduced_run_id"])
        assert reproduced.info.status == "FINISHED"
        assert reproduced.data.metrics["train_rows"] + reproduced.data.metrics["test_rows"] == rows - 100
    finally:
        shutil.rmtree(data)
        shutil.copytree(saved, data)


@pytest.mark.process
def test_dirty_tree_run_is_refused(client, project):
    """A run made while a tracked file had uncommitted changes cannot be reproduced: refused before Spark."""
    work, _, data, _ = project
    readme = work / "README.md"
    text = readme.read_text()
    readme.write_text(text + "\nlocal edit\n")
    try:  # a train run refused for a bad parameter still records the git state, cheaply
        result = script(work, "train.py", "--data_path", data, "--max_depth", "99")
    finally:
        readme.write_text(text)
    assert result.returncode == 2
    dirty_run = client.search_runs(
        [client.get_experiment_by_name("sparkmlops-tests").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    assert dirty_run.data.tags["git_dirty"] == "true"
    result = script(work, "reproduce.py", "--run_id", dirty_run.info.run_id)
    assert_refused(result, client, "was made from a git tree with uncommitted changes")
    assert not reproductions_of(client, dirty_run.info.run_id)


@pytest.mark.process
def test_run_without_commit_and_other_runs_are_refused(client, tmp_path, project):
    work, _, data, _ = project
    plain = copy_project(tmp_path / "not-git")  # no repository: git_commit=unknown
    assert script(plain, "train.py", "--data_path", data, "--max_depth", "99").returncode == 2
    no_commit = client.search_runs(
        [client.get_experiment_by_name("sparkmlops-tests").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    assert no_commit.data.tags["git_commit"] == "unknown"
    with pytest.raises(UserInputError, match="has no git commit on record"):
        reproduce_reproduce.ReproduceParams(run_id=no_commit.info.run_id).validate()
    assert script(work, "generate_data.py").returncode == 2, "a run of an entry point that is not re-run"
    generate_run = client.search_runs(
        [no_commit.info.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    with pytest.raises(UserInputError, match="run of 'generate_data', which reproduce does not re-run"):
        reproduce_reproduce.ReproduceParams(run_id=generate_run.info.run_id).validate()
    with pytest.raises(UserInputError, match="run 'nope' not found"):
        reproduce_reproduce.ReproduceParams(run_id="nope").validate()
    with pytest.raises(UserInputError, match="unknown env_manager .conda.: use local"):
        reproduce_reproduce.ReproduceParams(run_id="x", env_manager="conda").validate()
    with pytest.raises(UserInputError, match="tolerance must be >= 0"):
        reproduce_reproduce.ReproduceParams(run_id="x", tolerance=-1).validate()
    with pytest.raises(UserInputError, match="run_id is empty"):
        reproduce_reproduce.ReproduceParams().validate()


def test_metric_comparison_rules():
    report = reproduce_reproduce.compare_metrics(
        {"rmse": 200.0, "r2": 0.5, "fit_seconds": 10.0, "gone": 1.0, "nan": math.nan, "trial_id": 1.5e18},
        {"rmse": 200.0 + 1e-10, "r2": 0.5, "fit_seconds": 99.0, "new": 2.0, "nan": math.nan, "trial_id": -3e17},
        tolerance=0.0,
    )
    rows = report.set_index("metric")
    assert not rows.loc["rmse", "within_tolerance"] and rows.loc["r2", "within_tolerance"]
    assert rows.loc["fit_seconds", "within_tolerance"] and not rows.loc["fit_seconds", "compared"]
    # tune_optuna's trial_id: MLflow's Optuna storage's numbering (hashes of run ids), new on every run
    assert rows.loc["trial_id", "within_tolerance"] and not rows.loc["trial_id", "compared"]
    assert not rows.loc["gone", "within_tolerance"] and not rows.loc["new", "within_tolerance"]
    assert rows.loc["nan", "within_tolerance"]
    loose = reproduce_reproduce.compare_metrics({"rmse": 200.0}, {"rmse": 200.0 + 1e-10}, tolerance=1e-9)
    assert loose["within_tolerance"].all()
    assert reproduce_reproduce.library_differences(
        {"pyspark_version": "4.0.1", "mlflow_version": "3.17.2"},
        {"pyspark_version": "4.1.1", "mlflow_version": "3.17.2"},
    ) == [("pyspark", "4.0.1", "4.1.1")]


# ----------------------------------------------------------------------------------------------
# Where the code comes from: a run's tags are anyone's to edit, so its source is checked before git sees it


def tagged_run(client, tags: dict[str, str]) -> str:
    """A FINISHED, clean train run at a commit this checkout does not have, its data on record: everything
    read_original_run checks before the code source passes, so ``tags`` (where the code is) decide."""
    assert (
        subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "cat-file", "-e", f"{ABSENT_COMMIT}^{{commit}}"], capture_output=True
        ).returncode
        != 0
    )
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    run = client.create_run(
        experiment,
        run_name="train rf 3x3",
        tags={
            "entry_point": "train",
            "git_commit": ABSENT_COMMIT,
            "git_dirty": "false",
            "data_digest": "0" * 16,
            **tags,
        },
    )
    client.log_param(run.info.run_id, "data_path_resolved", "/nonexistent/listings.parquet")
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def assert_refused_before_cloning(result, client, message):
    """Refused before Spark (assert_refused) and before reproduce_and_log, which tags and clones."""
    run = assert_refused(result, client, message)
    assert "code_source" not in run.data.tags and "original_run_id" not in run.data.tags, run.data.tags
    return run


@pytest.mark.parametrize(
    "url, transport",
    [
        ("http://git.example.com/org/repo.git", "http"),
        ("git://git.example.com/org/repo.git", "git"),
        ("ext::sh -c touch% {marker}", "ext"),  # a remote helper that runs a command: here, one leaving a marker
    ],
)
def test_a_source_over_another_transport_is_refused_before_spark(client, tmp_path, url, transport):
    marker = tmp_path / "executed"
    url = url.format(marker=marker)
    run_id = tagged_run(client, {"mlflow.source.git.repoURL": url})
    message = (
        f"code source {url} (the run's tag mlflow.source.git.repoURL) uses {transport}: reproduce fetches "
        "code only over https, ssh or from a local path"
    )
    with pytest.raises(UserInputError, match=re.escape(message)):  # even when every source is trusted
        reproduce_reproduce.ReproduceParams(run_id=run_id, trusted_sources="any").validate()
    assert_refused_before_cloning(script_in_process("reproduce.py", "--run_id", run_id), client, message)
    # typed by the user, a project_uri is trusted, but over the same transports only
    with pytest.raises(UserInputError, match=re.escape(f"code source {url} (project_uri) uses {transport}")):
        reproduce_reproduce.ReproduceParams(run_id=run_id, project_uri=url).validate()
    assert not marker.exists(), "the ext:: command ran"


@pytest.mark.parametrize(
    "tags",
    [
        {"git_subdirectory": "../../elsewhere"},
        {"git_subdirectory": "/etc"},
        {"mlflow.source.name": "https://git.example.com/org/repo.git#../../x"},
    ],
)
def test_a_project_folder_outside_the_clone_is_refused_before_spark(client, tags):
    """The project's folder comes from the run's tags too: one that leaves the clone is refused before any
    clone or run, whatever the source."""
    run_id = tagged_run(client, tags)
    folder = tags.get("git_subdirectory") or tags["mlflow.source.name"].split("#", 1)[1]
    assert_refused_before_cloning(
        script_in_process("reproduce.py", "--run_id", run_id, "--trusted_sources", "any"),
        client,
        f"the run's project folder '{folder}' (from its tags) leaves the repository",
    )


def test_a_source_git_would_read_as_an_option_is_refused(client, tmp_path):
    marker = tmp_path / "executed"
    url = f"--upload-pack=touch {marker}"
    run_id = tagged_run(client, {"mlflow.source.git.repoURL": url})
    message = f"code source {url} (the run's tag mlflow.source.git.repoURL) starts with '-'"
    with pytest.raises(UserInputError, match=re.escape(message)):
        reproduce_reproduce.ReproduceParams(run_id=run_id, trusted_sources="any").validate()
    assert_refused_before_cloning(script_in_process("reproduce.py", "--run_id", run_id), client, message)
    with pytest.raises(UserInputError, match=re.escape(f"code source {url} starts with '-'")):
        clone_at(url, ABSENT_COMMIT, tmp_path)
    assert not marker.exists(), "git ran the tag as its --upload-pack command"


@pytest.mark.parametrize(
    "url, prefix, outside",
    [
        (
            "https://git.example.com/org/repo.git",
            "https://git.example.com/org/",
            [
                "https://git.example.com/org-evil/repo.git",
                "https://git.example.com/org/../org-evil/repo.git",
                "https://git.example.com/org/%2e%2e/org-evil/repo.git",
                "https://git.example.com.evil.test/org/repo.git",
            ],
        ),
        (
            "git@git.example.com:org/repo.git",
            "git@git.example.com:org",
            ["git@git.example.com:org-evil/repo.git", "git@git.example.com:org/../evil/repo.git"],
        ),
        (
            "ssh://git@git.example.com/org/repo",
            "ssh://git@git.example.com/org/repo.git",
            ["ssh://git@git.example.com/org/repository", "ssh://git@git.example.com/org/repo-evil"],
        ),
    ],
)
def test_a_source_from_the_tags_must_be_trusted(client, url, prefix, outside):
    """A URL from the run's tags is not this checkout or one of its remotes: refused, saying how to allow it;
    admitted by trusted_sources when a prefix covers it at a path boundary, by `any`, or as project_uri."""
    run_id = tagged_run(client, {"mlflow.source.git.repoURL": url})
    message = f"code source {url} comes from the run's tag mlflow.source.git.repoURL and is not trusted"
    with pytest.raises(UserInputError, match=re.escape(message)):
        reproduce_reproduce.ReproduceParams(run_id=run_id).validate()
    result = script_in_process("reproduce.py", "--run_id", run_id)
    assert_refused_before_cloning(result, client, message)
    assert f"-P trusted_sources=<its URL or a prefix of it> or -P project_uri={url}" in last_line(result.stderr)

    def source(trusted: str, tags=None, project_uri="") -> str:
        return find_code_source(ABSENT_COMMIT, project_uri, tags or {"mlflow.source.git.repoURL": url}, trusted)

    assert reproduce_reproduce.ReproduceParams(run_id=run_id, trusted_sources=prefix).validate().source == url
    for trusted in ("any", f"https://elsewhere.example.com/, {prefix}", prefix.rstrip("/") + "/"):
        assert source(trusted) == url, trusted
    assert source("", project_uri=url) == url
    # the run launched from `mlflow run <url>#folder` records it as its source name, folder after the #
    assert source(prefix, tags={"mlflow.source.name": f"{url}#project"}) == url
    cut = prefix.rstrip("/")[:-1]  # a prefix that stops inside a name covers nothing
    for trusted in (cut, prefix + "x", "https://elsewhere.example.com/"):
        with pytest.raises(UserInputError, match="is not trusted"):
            source(trusted)
    for other in outside:
        with pytest.raises(UserInputError, match=re.escape(f"code source {other} comes from the run's tag")):
            source(prefix, tags={"mlflow.source.git.repoURL": other})


def test_the_checkouts_own_remotes_are_trusted_by_default(tmp_path):
    """A run made from another clone of this project's repository records the remote's URL: trusted when this
    checkout has that remote, with or without `.git`; another repository's is not."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "MLproject").write_text("name: x\n")
    commit_all(checkout)
    subprocess.run(
        GIT + ["-C", str(checkout), "remote", "add", "origin", "https://git.example.com/org/repo.git"], check=True
    )
    for url in ("https://git.example.com/org/repo.git", "https://git.example.com/org/repo/"):
        tags = {"mlflow.source.git.repoURL": url}
        assert find_code_source(ABSENT_COMMIT, "", tags, checkout=checkout) == url
    with pytest.raises(UserInputError, match="is not trusted"):
        find_code_source(
            ABSENT_COMMIT, "", {"mlflow.source.git.repoURL": "https://git.example.com/org/other.git"}, checkout=checkout
        )


def test_git_itself_fetches_over_the_allowed_transports_only(tmp_path, monkeypatch):
    """What git fetches on the way (here an https URL the user's git configuration rewrites to http, as a
    redirect or a submodule could) is held to https, ssh and file by git's protocol.allow."""
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "url.http://127.0.0.1:9/.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "https://git.example.com/")
    with pytest.raises(UserInputError, match="transport 'http' not allowed"):
        clone_at("https://git.example.com/org/repo.git", ABSENT_COMMIT, tmp_path)
