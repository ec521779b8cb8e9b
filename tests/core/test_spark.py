"""The SparkSession factory: spark-defaults.conf read as Spark reads it, and the master a session really
gets from each place Spark users put it, in Spark's order of precedence."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import PROJECT_ROOT, SPARK_CONF, newest_run, run_entry, script_in_process

from sparkmlops.core import compat
from sparkmlops.core import spark as spark_factory

# A spark-defaults.conf with what Java's properties format allows and a line-based reading gets wrong: a
# key given twice (the last wins), `=` and `:` separators, a value with spaces, a continued line, escapes,
# comments with # and !, trailing blanks (trimmed, as Spark trims values).
TRICKY_DEFAULTS = """\
# comment
! another comment
spark.master   local[1]
spark.master=local[3]   \n\
spark.pyspark.python : /opt/my python/bin/python3   \n\
spark.executor.extraJavaOptions -Da=1 \\
    -Db=2
spark.app.name caf\\u00e9 \u2014 \u65e5\u672c
spark.some\\ key value
spark.empty
\tspark.tabbed\ttab value\t
"""


def test_spark_defaults_are_read_as_spark_itself_reads_them(spark, tmp_path, monkeypatch):
    (tmp_path / "spark-defaults.conf").write_text(TRICKY_DEFAULTS, encoding="utf-8")
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    jvm = compat.jvm(spark)
    spark_reads = jvm.org.apache.spark.util.Utils.getPropertiesFromFile(str(tmp_path / "spark-defaults.conf"))
    expected = dict(jvm.scala.jdk.javaapi.CollectionConverters.asJava(spark_reads))
    assert spark_factory.spark_defaults() == expected
    assert expected["spark.master"] == "local[3]" and expected["spark.pyspark.python"] == "/opt/my python/bin/python3"


# What a fresh process's session says about itself, started by the project's factory.
_REPORT = """
import json, os, sys
from sparkmlops.core.spark import get_spark
spark = get_spark("master-check", master=sys.argv[1] or None)
print(json.dumps({"master": spark.sparkContext.master, "pyspark_python": os.environ.get("PYSPARK_PYTHON")}))
"""
_QUIET = " ".join(f"--conf {k}={v}" for k, v in SPARK_CONF.items() if " " not in v)


@pytest.mark.process
@pytest.mark.parametrize(
    "defaults, submit_args, parameter, master, python",
    [
        # spark-defaults.conf alone: its last spark.master, and its spark.pyspark.python for the executors
        (TRICKY_DEFAULTS, "", "", "local[3]", "/opt/my python/bin/python3"),
        # PYSPARK_SUBMIT_ARGS' --master (shell-quoted) beats the file
        (TRICKY_DEFAULTS, "--master 'local[2]'", "", "local[2]", "/opt/my python/bin/python3"),
        # the spark_master parameter beats both
        (TRICKY_DEFAULTS, "--master local[2]", "local[1]", "local[1]", "/opt/my python/bin/python3"),
        # nothing anywhere: Spark's own default, and this Python for local workers
        ("", "", "", "local[*]", sys.executable),
    ],
    ids=["spark-defaults.conf", "PYSPARK_SUBMIT_ARGS", "parameter", "nothing set"],
)
def test_a_session_gets_the_master_spark_precedence_gives(tmp_path, defaults, submit_args, parameter, master, python):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    if defaults:
        (conf_dir / "spark-defaults.conf").write_text(defaults, encoding="utf-8")
    result = run_entry(
        [sys.executable, "-c", _REPORT, parameter],
        env={"SPARK_CONF_DIR": str(conf_dir), "PYSPARK_SUBMIT_ARGS": f"{submit_args} {_QUIET} pyspark-shell"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"master": master, "pyspark_python": python}


def test_a_master_parameter_that_cannot_apply_is_said_and_tagged(spark, client, tmp_path):
    """A process whose session already runs (as under spark-submit, where the JVM's --master wins; here the
    test process's local[2]) cannot take the spark_master parameter: one warning line says so, and the run
    is tagged with the master really used."""
    result = script_in_process(
        "generate_data.py", "--output_path", str(tmp_path / "out"), "--n_rows", "50", "--spark_master", "local[1]"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "warning: spark_master=local[1] was not applied: this process's Spark session already runs on local[2]"
    ) in result.stderr
    run = newest_run(client)
    assert run.data.tags["spark_master"] == "local[2]" and run.data.tags["spark_master_ignored"] == "local[1]"


@pytest.mark.process
@pytest.mark.parametrize(
    "parameter, master",
    [("", "local[2]"), ("local[1]", "local[1]")],
    ids=["spark-submit's --master", "the parameter over spark-submit's"],
)
def test_under_spark_submit_the_parameter_still_wins(client, tmp_path, parameter, master):
    """spark-submit's --master is a default that the session's own settings override, so -P spark_master
    applies under spark-submit too, with no warning; the run's tag says the master really used."""
    from tools import local_cluster

    command = [str(local_cluster.spark_home() / "bin" / "spark-submit"), "--master", "local[2]"]
    command += [arg for k, v in SPARK_CONF.items() for arg in ("--conf", f"{k}={v}")]
    command += [str(PROJECT_ROOT / "generate_data.py"), "--output_path", str(tmp_path / "out"), "--n_rows", "50"]
    command += ["--spark_master", parameter] if parameter else []
    result = run_entry(command, env={"PYSPARK_PYTHON": sys.executable, "PYSPARK_SUBMIT_ARGS": ""}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "was not applied" not in result.stderr
    run = newest_run(client)
    assert run.data.tags["spark_master"] == master and "spark_master_ignored" not in run.data.tags, run.data.tags
