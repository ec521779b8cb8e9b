"""Build the Spark class archive (sparkmlops/core/class_archive.py) that the entry points' JVMs map.

    python -m tools.class_archive build    # make spark-archive: once per Java and Spark installation

Runs a small workload under spark-submit (parquet, MLlib pipelines of both tasks, a model saved and loaded)
with ``-XX:ArchiveClassesAtExit``: the JVM dumps the classes it loaded as it exits, into a file of its own
that replaces the archive whole. Nothing is built when the archive for this Java and Spark exists.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from sparkmlops.core import class_archive
from sparkmlops.core.environment import PROJECT_ROOT

# What would make spark-submit run something else, or lead the classpath with a folder (the JVM refuses to
# archive a classpath that starts with a non-empty folder).
_NOT_PASSED_ON = ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "PYSPARK_SUBMIT_ARGS", "PYSPARK_DRIVER_PYTHON")
_NOT_PASSED_ON += ("PYSPARK_DRIVER_PYTHON_OPTS", "SPARK_SUBMIT_OPTS", *class_archive.CONF_DIRS)
_STALE_PARTIAL_SECONDS = 3600


def build(force: bool = False) -> Path:
    """The archive's path, after building it if it is missing (or ``force``)."""
    target = class_archive.archive_path()
    if target.is_file() and not force:
        return target
    conf = class_archive.spark_home() / "conf"
    if conf.is_dir() and any(conf.iterdir()):
        # spark-submit puts it first on the classpath, and the JVM archives no classpath led by a non-empty folder
        raise click.ClickException(f"{conf} is not empty: Spark's classes cannot be archived for this SPARK_HOME")
    target.parent.mkdir(parents=True, exist_ok=True)
    for partial in target.parent.glob(".spark-classes-*"):  # left by a build that was killed
        with contextlib.suppress(FileNotFoundError):  # or removed by another build meanwhile
            if time.time() - partial.stat().st_mtime > _STALE_PARTIAL_SECONDS:
                partial.unlink()
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    os.unlink(partial)  # the JVM creates it as it exits
    env = {k: v for k, v in os.environ.items() if k not in _NOT_PASSED_ON}
    env.update(
        SPARK_SUBMIT_OPTS=shlex.quote(f"-XX:ArchiveClassesAtExit={partial}"),
        PYSPARK_PYTHON=sys.executable,
        PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")])),
    )
    submit = class_archive.spark_home() / "bin" / "spark-submit"
    command = [str(submit), "--master", "local[2]", __file__, "--workload"]
    try:
        # spark-submit's JVM runs the workload's Python, then dumps the archive as it exits.
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0 or not Path(partial).is_file():
            tail = "\n".join((result.stderr + result.stdout).strip().splitlines()[-20:])
            raise click.ClickException(f"spark-submit exited {result.returncode}, archive written: no\n{tail}")
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


def _workload() -> None:
    """What the entry points' drivers do: read and write parquet, fit, save and load MLlib pipelines of both
    tasks, evaluate, aggregate."""
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import RandomForestClassifier
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator, RegressionEvaluator
    from pyspark.ml.feature import Imputer, StringIndexer, VectorAssembler
    from pyspark.ml.regression import RandomForestRegressor
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = SparkSession.builder.appName("class-archive").config("spark.ui.enabled", "false").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    rows = [(float(i % 7) if i % 5 else None, ["a", "b", "c"][i % 3], float(i % 11), i % 2) for i in range(200)]
    frame = spark.createDataFrame(rows, "x double, kind string, y double, flag int")
    with tempfile.TemporaryDirectory() as folder:
        frame.write.parquet(f"{folder}/data")
        data = spark.read.parquet(f"{folder}/data").withColumn("label", F.col("flag").cast("string"))
        features = [
            StringIndexer(inputCol="kind", outputCol="kind_index", handleInvalid="keep"),
            Imputer(inputCols=["x"], outputCols=["x_imputed"], strategy="median"),
            VectorAssembler(inputCols=["x_imputed", "kind_index"], outputCol="features"),
        ]
        train, test = data.randomSplit([0.8, 0.2], seed=42)
        regressor = Pipeline(stages=[*features, RandomForestRegressor(labelCol="y", numTrees=3)]).fit(train)
        RegressionEvaluator(labelCol="y").evaluate(regressor.transform(test))
        label = StringIndexer(inputCol="label", outputCol="label_index")
        classifier = Pipeline(stages=[*features, label, RandomForestClassifier(labelCol="label_index", numTrees=3)])
        fitted = classifier.fit(train)
        MulticlassClassificationEvaluator(labelCol="label_index").evaluate(fitted.transform(test))
        fitted.write().overwrite().save(f"{folder}/model")
        scored = PipelineModel.load(f"{folder}/model").transform(data)
        scored.groupBy("kind").agg(F.avg("prediction")).write.mode("overwrite").parquet(f"{folder}/scores")
    spark.stop()


@click.group()
def main() -> None:
    """The Spark class archive that makes the entry points' JVMs start sooner."""


@main.command(name="build")
@click.option("--force", is_flag=True, help="Build it again even if it exists.")
def build_command(force: bool) -> None:
    """Build the archive for this Java and Spark if it is missing; print its path."""
    if os.name == "nt":
        raise click.ClickException("the Spark class archive is for Linux and macOS")
    click.echo(f"Spark class archive: {build(force)}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--workload"]:  # under spark-submit, from build()
        _workload()
    else:
        main()
