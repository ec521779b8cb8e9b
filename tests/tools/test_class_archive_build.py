"""`make spark-archive` (``python -m tools.class_archive build``): the archive is built whole, once; the JVM
the session factory launches maps Spark's classes from it, with the user's own JVM options still applied and
nothing left in the environment of the processes it starts later; a damaged one does not stop Spark.

Each case needs a JVM of its own, started in a fresh process with a cache folder of the test's own."""

from __future__ import annotations

import sys

import click
import pytest
from conftest import run_entry

from tools import class_archive

pytestmark = pytest.mark.process

SPARK_CONTEXT = "org.apache.spark.SparkContext "
START = """
import os
from sparkmlops.core.spark import get_spark
print(get_spark('archive', 'local[1]').range(3).count())
print("after:", os.environ.get("SPARK_SUBMIT_OPTS"))
"""


def start_session(cache, class_log, more_options=""):
    """A fresh process that starts a session through the factory, logging where each class came from."""
    user_options = f"{more_options} -Xlog:class+load=info:file={class_log}".strip()
    env = {"XDG_CACHE_HOME": str(cache), "SPARK_SUBMIT_OPTS": user_options}
    result = run_entry([sys.executable, "-c", START], env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.splitlines()[0] == "3", result.stderr[-3000:]
    assert result.stdout.splitlines()[1] == f"after: {user_options}"  # what its own children will see
    return result


def class_source(class_log) -> str:
    line = next(line for line in class_log.read_text().splitlines() if SPARK_CONTEXT in line)
    return line.split("source: ", 1)[1]


def build(cache):
    return run_entry([sys.executable, "-m", "tools.class_archive", "build"], env={"XDG_CACHE_HOME": str(cache)})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(cache folder, archive) after `python -m tools.class_archive build`."""
    cache = tmp_path_factory.mktemp("cache")
    result = build(cache)
    assert result.returncode == 0, result.stderr[-3000:]
    archive = cache / "sparkmlops" / result.stdout.strip().rsplit("/", 1)[1]
    return cache, archive


def test_build_writes_one_archive_once(built):
    cache, archive = built
    assert [p.name for p in (cache / "sparkmlops").iterdir()] == [archive.name]  # no partial file beside it
    assert archive.stat().st_size > 10_000_000
    written = archive.stat().st_mtime_ns
    again = build(cache)
    assert again.returncode == 0 and archive.name in again.stdout
    assert archive.stat().st_mtime_ns == written  # found, not rebuilt


def test_the_factorys_jvm_maps_spark_from_the_archive_and_keeps_the_users_options(built, tmp_path):
    cache, _ = built
    start_session(cache, tmp_path / "with.log")
    assert class_source(tmp_path / "with.log") == "shared objects file (top)"  # the user's -Xlog still applied
    start_session(tmp_path / "no-cache", tmp_path / "without.log")
    assert class_source(tmp_path / "without.log").endswith(".jar")  # read from Spark's jar
    start_session(cache, tmp_path / "own.log", more_options="-Xshare:auto")  # the user's own sharing setting
    assert class_source(tmp_path / "own.log").endswith(".jar")


def test_a_damaged_archive_does_not_stop_spark(built, tmp_path):
    _, archive = built
    cache = tmp_path / "cache"
    (cache / "sparkmlops").mkdir(parents=True)
    (cache / "sparkmlops" / archive.name).write_bytes(b"not an archive")
    start_session(cache, tmp_path / "damaged.log")
    assert class_source(tmp_path / "damaged.log").endswith(".jar")


def test_a_spark_home_with_a_non_empty_conf_folder_is_refused_in_one_line(monkeypatch, tmp_path):
    """The JVM archives no classpath that a non-empty folder leads, and spark-submit leads it with conf/."""
    (tmp_path / "spark" / "conf").mkdir(parents=True)
    (tmp_path / "spark" / "conf" / "spark-env.sh.template").write_text("")
    monkeypatch.setenv("SPARK_HOME", str(tmp_path / "spark"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(click.ClickException, match="conf is not empty"):
        class_archive.build()
    assert not (tmp_path / "cache" / "sparkmlops").exists()
