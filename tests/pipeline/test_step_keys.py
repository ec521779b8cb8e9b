"""Step keys: what makes a pipeline step reusable (code, parameters, data, upstream steps), decided without
Spark."""

from __future__ import annotations

import os
import subprocess

from conftest import EXPERIMENT

from sparkmlops.pipeline import step_keys


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _repository(tmp_path):
    repo = tmp_path / "project"
    (repo / "sparkmlops").mkdir(parents=True)
    (repo / "train.py").write_text("print('train')\n")
    (repo / ".gitignore").write_text("mlruns/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    return repo


def _commit(repo) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def test_the_code_identity_is_the_commit_plus_what_changed_since(tmp_path):
    repo = _repository(tmp_path)
    clean = step_keys.code_identity(repo)
    assert clean.startswith(_commit(repo) + "+")
    (repo / "train.py").write_text("print('changed')\n")
    edited = step_keys.code_identity(repo)
    assert edited.startswith(_commit(repo) + "+") and edited != clean
    (repo / "train.py").write_text("print('changed again')\n")
    assert step_keys.code_identity(repo) not in (clean, edited)  # the content counts, not only "dirty"
    (repo / "train.py").write_text("print('train')\n")
    assert step_keys.code_identity(repo) == clean
    (repo / "sparkmlops" / "new.py").write_text("x = 1\n")  # untracked, not ignored: code
    assert step_keys.code_identity(repo) != clean
    os.remove(repo / "sparkmlops" / "new.py")
    (repo / "mlruns").mkdir()
    (repo / "mlruns" / "run.txt").write_text("output")  # ignored run output: not code
    assert step_keys.code_identity(repo) == clean


def test_the_installed_libraries_are_part_of_the_code(tmp_path, monkeypatch):
    import pyspark

    assert f"pyspark={pyspark.__version__}" in step_keys.library_versions().split(",")
    repo = _repository(tmp_path)
    clean = step_keys.code_identity(repo)
    monkeypatch.setattr(step_keys, "library_versions", lambda: "pyspark=9.9.9")  # another environment
    assert step_keys.code_identity(repo) != clean


def test_outputs_notes_and_tests_in_the_project_folder_are_not_code(tmp_path):
    """`mlflow run . -P score_output_path=scores.parquet` writes into the project: the next run reuses."""
    repo = _repository(tmp_path)
    clean = step_keys.code_identity(repo)
    (repo / "scores.parquet").mkdir()
    (repo / "scores.parquet" / "part-0.parquet").write_bytes(b"rows")
    (repo / "notes.ipynb").write_text("{}")
    (repo / "README.md").write_text("# notes\n")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_more.py").write_text("def test(): pass\n")
    assert step_keys.code_identity(repo) == clean


def test_a_project_in_a_subfolder_of_a_repository_keeps_its_commit(tmp_path):
    """`mlflow run <url>#<folder>`: untracked files are found relative to the project, not the repository."""
    outer = tmp_path / "repo"
    project = outer / "projects" / "price"
    (project / "sparkmlops").mkdir(parents=True)
    (project / "train.py").write_text("print('train')\n")
    _git(outer, "init", "-q")
    _git(outer, "add", "-A")
    _git(outer, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    clean = step_keys.code_identity(project)
    assert clean.startswith(_commit(outer) + "+")
    (project / "sparkmlops" / "new.py").write_text("x = 1\n")
    changed = step_keys.code_identity(project)
    assert changed.startswith(_commit(outer) + "+") and changed != clean


def test_outside_git_the_sources_are_the_code(tmp_path):
    project = tmp_path / "unpacked"
    (project / "sparkmlops").mkdir(parents=True)
    (project / "train.py").write_text("print('train')\n")
    first = step_keys.code_identity(project)
    assert first.startswith("nogit+") and step_keys.code_identity(project) == first
    (project / "sparkmlops" / "fitting.py").write_text("x = 2\n")
    assert step_keys.code_identity(project) != first


def test_the_data_identity_follows_files_sizes_and_times_not_spark_markers(tmp_path):
    folder = tmp_path / "listings.parquet"
    folder.mkdir()
    (folder / "part-0.parquet").write_bytes(b"rows")
    first = step_keys.data_identity(str(folder))
    assert first and step_keys.data_identity(str(folder)) == first
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-0.parquet.crc").write_bytes(b"crc")
    assert step_keys.data_identity(str(folder)) == first, "files Spark does not read are not the data"
    os.utime(folder / "part-0.parquet", ns=(1, 1))
    touched = step_keys.data_identity(str(folder))
    assert touched != first
    (folder / "part-1.parquet").write_bytes(b"more")
    assert step_keys.data_identity(str(folder)) not in (first, touched)
    csv = tmp_path / "listings.csv"
    csv.write_text("a,b\n1,2\n")
    assert step_keys.data_identity(str(csv)) and step_keys.data_identity(f"file://{csv}") == step_keys.data_identity(
        str(csv)
    )
    assert step_keys.data_identity(str(tmp_path / "missing.parquet")) is None


def test_a_data_path_is_identified_as_the_entry_points_read_it(tmp_path, monkeypatch):
    single = tmp_path / "_listings.parquet"  # a file named like a Spark marker, given on its own: the data
    single.write_bytes(b"rows")
    first = step_keys.data_identity(str(single))
    assert first is not None
    os.utime(single, ns=(1, 1))
    assert step_keys.data_identity(str(single)) not in (None, first)
    assert step_keys.data_identity(f"file:{single}") == step_keys.data_identity(str(single))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert step_keys.data_identity("~/_listings.parquet") == step_keys.data_identity(str(single))
    assert step_keys.data_identity("dbfs:/mnt/listings") is None  # no identity: the step always runs
    assert step_keys._pyarrow_uri("s3a://bucket/listings") == "s3://bucket/listings"  # Hadoop's name, pyarrow's


def test_a_key_changes_with_any_input_and_is_none_without_a_data_identity():
    base = {"step": "train", "code": "abc", "params": {"max_depth": "5"}, "data": {"data_path": "d1"}, "upstream": {}}
    key = step_keys.step_key(**base)
    assert key == step_keys.step_key(**base)
    for field, other in (
        ("step", "tune"),
        ("code", "abc+123"),
        ("params", {"max_depth": "6"}),
        ("data", {"data_path": "d2"}),
        ("upstream", {"check_data": "k"}),
    ):
        assert step_keys.step_key(**{**base, field: other}) != key, field
    assert step_keys.step_key(**{**base, "data": {"data_path": None}}) is None


def test_only_a_finished_run_of_the_same_step_and_key_is_reused(client):
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id

    def run(step, key, status):
        run_id = client.create_run(experiment, tags={step_keys.STEP_KEY_TAG: key, "pipeline_step": step}).info.run_id
        client.set_terminated(run_id, status)
        return run_id

    key = os.urandom(8).hex()
    assert step_keys.reusable_run(client, experiment, "train", key) is None
    run("train", key, "FAILED")
    run("check_data", key, "FINISHED")
    assert step_keys.reusable_run(client, experiment, "train", key) is None
    finished = run("train", key, "FINISHED")
    assert step_keys.reusable_run(client, experiment, "train", key).info.run_id == finished
    assert step_keys.reusable_run(client, experiment, "train", None) is None
