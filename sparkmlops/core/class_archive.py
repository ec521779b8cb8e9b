"""A class-data-sharing archive of the classes Spark's driver loads, for a faster JVM start.

Each entry point that starts its own JVM spends seconds loading and verifying the same few thousand Spark
classes. Java 17's dynamic CDS (``-XX:ArchiveClassesAtExit``) dumps them once into an archive that later
JVMs map instead (``-XX:SharedArchiveFile``). ``make setup`` builds it:

    python -m sparkmlops.core.class_archive build

It is kept per Java and Spark installation (``$XDG_CACHE_HOME/sparkmlops``, else ``~/.cache/sparkmlops``),
written whole or not at all, and used only by JVMs this process launches (not under spark-submit, not over
Spark Connect). A JVM whose classpath or Java differs from the archive's ignores it, silently.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sparkmlops.core.environment import PROJECT_ROOT, check_java, package_version

# The driver's JVM options (spark-submit's launcher adds them): silence CDS's own messages, which the JVM
# otherwise prints to stdout when it ignores an archive that does not match.
_QUIET = "-Xlog:cds*=off"


def spark_home() -> Path:
    """The Spark installation PySpark launches: $SPARK_HOME, else the one inside the pyspark package."""
    # found, not imported: entry points check their input before they import Spark
    return Path(os.environ.get("SPARK_HOME") or Path(importlib.util.find_spec("pyspark").origin).parent)


def archive_path() -> Path:
    """Where the archive for this Java and this Spark lives (it need not exist)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparkmlops"
    identity = f"{check_java()}|{os.environ.get('JAVA_HOME', '')}|{spark_home().resolve()}|{package_version('pyspark')}"
    return cache / f"spark-classes-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.jsa"


def java_options() -> str:
    """The driver JVM options that map the archive; "" when there is none for this Java and Spark."""
    path = archive_path()
    return f"-XX:SharedArchiveFile={path} {_QUIET}" if path.is_file() else ""


def use_for_local_jvm() -> None:
    """Let the JVM this process is about to launch map the archive (appended to SPARK_SUBMIT_OPTS, which
    spark-submit's launcher adds to the driver's command line, after the user's own options)."""
    options = java_options()
    current = os.environ.get("SPARK_SUBMIT_OPTS", "")
    if options and "SharedArchiveFile" not in current:
        os.environ["SPARK_SUBMIT_OPTS"] = f"{current} {options}".strip()


def build(force: bool = False) -> Path:
    """Run a small workload under spark-submit and keep the classes its driver loaded. Returns the archive's
    path. Another process building at the same time writes its own file; the last one replaces the first."""
    target = archive_path()
    if target.is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    os.unlink(partial)  # the JVM writes it at exit
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "PYSPARK_SUBMIT_ARGS")}
    env.update(
        SPARK_SUBMIT_OPTS=f"-XX:ArchiveClassesAtExit={partial} {_QUIET}",
        PYSPARK_PYTHON=sys.executable,
        PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")])),
    )
    command = [str(spark_home() / "bin" / "spark-submit"), "--master", "local[2]", __file__, "--workload"]
    try:
        # spark-submit's JVM runs the workload's Python, then dumps the archive as it exits.
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0 or not Path(partial).is_file():
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"building the Spark class archive failed (exit {result.returncode}): {tail[0]}")
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
        classifier = Pipeline(
            stages=[
                *features,
                StringIndexer(inputCol="label", outputCol="label_index"),
                RandomForestClassifier(labelCol="label_index", numTrees=3),
            ]
        ).fit(train)
        MulticlassClassificationEvaluator(labelCol="label_index").evaluate(classifier.transform(test))
        classifier.write().overwrite().save(f"{folder}/model")
        scored = PipelineModel.load(f"{folder}/model").transform(data)
        scored.groupBy("kind").agg(F.avg("prediction")).write.mode("overwrite").parquet(f"{folder}/scores")
    spark.stop()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--workload"]:
        _workload()
        return 0
    if argv[:1] != ["build"]:
        print("usage: python -m sparkmlops.core.class_archive build [--force]", file=sys.stderr)
        return 2
    print(f"Spark class archive: {build(force='--force' in argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
