"""The Spark class archive (core/class_archive.py, built by make setup): built whole, once; mapped by the JVM the
session factory launches, after the user's own JVM options; and a broken one costs nothing but its speed.

Each case needs a JVM of its own, started in a fresh process with a cache folder of the test's own."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import run_entry

from sparkmlops.core import class_archive

pytestmark = pytest.mark.process

SPARK_CONTEXT = "org.apache.spark.SparkContext "


def start_session(cache, class_log):
    """A fresh process that starts a session through the factory, logging where each class came from."""
    code = "from sparkmlops.core.spark import get_spark; print(get_spark('archive', 'local[1]').range(3).count())"
    env = {"XDG_CACHE_HOME": str(cache), "SPARK_SUBMIT_OPTS": f"-Xlog:class+load=info:file={class_log}"}
    return run_entry([sys.executable, "-c", code], env=env, timeout=300)


def class_source(class_log) -> str:
    line = next(line for line in class_log.read_text().splitlines() if SPARK_CONTEXT in line)
    return line.split("source: ", 1)[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(cache folder, archive) after `python -m sparkmlops.core.class_archive build`."""
    cache = tmp_path_factory.mktemp("cache")
    result = run_entry(
        [sys.executable, "-m", "sparkmlops.core.class_archive", "build"], env={"XDG_CACHE_HOME": str(cache)}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    archive = cache / "sparkmlops" / result.stdout.strip().rsplit("/", 1)[1]
    return cache, archive


def test_build_writes_one_archive_once(built):
    cache, archive = built
    assert [p.name for p in (cache / "sparkmlops").iterdir()] == [archive.name]  # no partial file beside it
    assert archive.stat().st_size > 10_000_000
    written = archive.stat().st_mtime_ns
    again = run_entry(
        [sys.executable, "-m", "sparkmlops.core.class_archive", "build"], env={"XDG_CACHE_HOME": str(cache)}
    )
    assert again.returncode == 0 and archive.name in again.stdout
    assert archive.stat().st_mtime_ns == written  # found, not rebuilt


def test_the_factorys_jvm_maps_spark_from_the_archive_and_keeps_the_users_options(built, tmp_path):
    cache, _ = built
    mapped = start_session(cache, tmp_path / "with.log")
    assert mapped.returncode == 0 and mapped.stdout.strip().endswith("3"), mapped.stderr[-3000:]
    assert class_source(tmp_path / "with.log") == "shared objects file (top)"  # the user's -Xlog still applies
    assert "cds" not in mapped.stdout + mapped.stderr

    unmapped = start_session(tmp_path / "no-cache", tmp_path / "without.log")
    assert unmapped.returncode == 0, unmapped.stderr[-3000:]
    assert class_source(tmp_path / "without.log").endswith(".jar")  # read from Spark's jar


def test_a_broken_archive_is_ignored_quietly(built, tmp_path):
    _, archive = built
    cache = tmp_path / "cache"
    (cache / "sparkmlops").mkdir(parents=True)
    (cache / "sparkmlops" / archive.name).write_bytes(b"not an archive")
    result = start_session(cache, tmp_path / "broken.log")
    assert result.returncode == 0 and result.stdout.strip().endswith("3"), result.stderr[-3000:]
    assert class_source(tmp_path / "broken.log").endswith(".jar")  # read from Spark's jar
    assert "cds" not in result.stdout + result.stderr


def test_each_java_and_spark_installation_has_its_own_archive(monkeypatch, tmp_path):
    """Another Spark (SPARK_HOME, or the pyspark of another environment) or another Java gets another
    archive, so a JVM never maps one dumped from other classes; no key, no option."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("SPARK_HOME", raising=False)
    here = class_archive.archive_path()
    assert here.parent == tmp_path / "sparkmlops" and class_archive.java_options() == ""
    monkeypatch.setenv("SPARK_HOME", str(tmp_path / "other-spark"))
    assert class_archive.archive_path() != here
    monkeypatch.delenv("SPARK_HOME")
    monkeypatch.setenv("JAVA_HOME", str(Path(os.path.realpath(shutil.which("java"))).parents[1]))
    assert class_archive.archive_path() != here  # keyed by the name PySpark launches it by
    monkeypatch.delenv("JAVA_HOME")
    here.parent.mkdir()
    here.write_bytes(b"archive")
    assert class_archive.java_options() == f"-XX:SharedArchiveFile={here} -Xlog:cds*=off"
