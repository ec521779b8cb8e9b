"""Which archive a JVM may map (core/class_archive.py), decided without starting one: the key follows the
Java and the Spark jars; the user's own class-data sharing, the off switch and a configuration folder on the
classpath each leave the JVM's options alone; and the option is in the environment only while the JVM is
launched."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from sparkmlops.core import class_archive
from sparkmlops.core import spark as spark_factory


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in (*class_archive.CONF_DIRS, class_archive.OFF_SWITCH, "SPARK_HOME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "cache" / "sparkmlops"


def make_archive() -> str:
    path = class_archive.archive_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"archive")
    return str(path)


def test_the_key_follows_the_spark_jars(cache, monkeypatch, tmp_path):
    here = class_archive.archive_path()
    assert here.parent == cache and class_archive.archive_path() == here
    other = tmp_path / "spark" / "jars"
    other.mkdir(parents=True)
    (other / "spark-core.jar").write_bytes(b"jar")
    monkeypatch.setenv("SPARK_HOME", str(other.parent))
    assert class_archive.archive_path() != here  # another Spark installation
    before = class_archive.archive_path()
    os.utime(other / "spark-core.jar", ns=(1, 1))
    assert class_archive.archive_path() != before  # the same Spark, reinstalled: the JVM would refuse the old one


def test_the_key_follows_the_java(cache, monkeypatch, tmp_path):
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_bytes(b"java")
    (tmp_path / "jdk" / "lib").mkdir()
    (tmp_path / "jdk" / "lib" / "modules").write_bytes(b"classes")
    monkeypatch.setattr(class_archive, "_java_executable", lambda: java)
    before = class_archive.archive_path()
    os.utime(tmp_path / "jdk" / "lib" / "modules", ns=(1, 1))
    assert class_archive.archive_path() != before  # the same Java path, another JDK build under it


def test_the_option_only_when_the_archive_exists(cache):
    assert class_archive.launch_options("") == ""
    path = make_archive()
    options = shlex.split(class_archive.launch_options("-Xmx2g"))
    assert options == [f"-XX:SharedArchiveFile={path}", class_archive.QUIET]


@pytest.mark.parametrize(
    "user_options",
    ["-XX:SharedArchiveFile=/mine.jsa", "-XX:ArchiveClassesAtExit=/mine.jsa", "-Xshare:off", "-Xlog:cds=info"],
)
def test_the_users_own_class_sharing_wins(cache, user_options):
    make_archive()
    assert class_archive.launch_options(f"--driver-java-options {user_options} pyspark-shell") == ""


@pytest.mark.parametrize("setting", [(class_archive.OFF_SWITCH, "off"), ("SPARK_CONF_DIR", "/etc/spark/conf")])
def test_the_off_switch_and_a_conf_folder_leave_the_jvm_alone(cache, monkeypatch, setting):
    make_archive()
    monkeypatch.setenv(*setting)
    assert class_archive.launch_options("") == ""


def test_an_unusable_cache_costs_only_the_speed(cache, monkeypatch, tmp_path):
    def no_home():
        raise RuntimeError("Could not determine home directory.")  # what pathlib raises without one

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setattr(Path, "home", no_home)
    assert class_archive.launch_options("") == ""


def test_every_place_a_user_gives_the_driver_java_options_counts(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))  # spark-defaults.conf is read from there
    (tmp_path / "spark-defaults.conf").write_text("spark.driver.extraJavaOptions -Dfrom=defaults\n")
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--driver-java-options -Dfrom=args pyspark-shell")
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-Dfrom=tool")
    given = spark_factory._user_java_options({"spark.driver.defaultJavaOptions": "-Dfrom=conf"})
    assert all(f"-Dfrom={where}" in given for where in ("defaults", "args", "tool", "conf"))


@pytest.mark.parametrize("saved", [None, "-Xmx2g"])
def test_the_option_is_set_only_while_launching(cache, monkeypatch, saved):
    path = make_archive()
    if saved is None:
        monkeypatch.delenv("SPARK_SUBMIT_OPTS", raising=False)
    else:
        monkeypatch.setenv("SPARK_SUBMIT_OPTS", saved)
    with class_archive.mapped_while_launching(saved or ""):
        assert f"-XX:SharedArchiveFile={path}" in os.environ["SPARK_SUBMIT_OPTS"]
        assert os.environ["SPARK_SUBMIT_OPTS"].startswith(saved or "-XX")  # after the user's own
    assert os.environ.get("SPARK_SUBMIT_OPTS") == saved
