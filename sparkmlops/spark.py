"""The project's one SparkSession factory.

The master and configuration come from where Spark users put them: ``spark-submit --master``,
``PYSPARK_SUBMIT_ARGS``, ``$SPARK_CONF_DIR/spark-defaults.conf`` or ``SPARK_REMOTE``. The factory only
adds what the caller passes explicitly (the ``spark_master`` entry-point parameter, test settings);
with nothing set anywhere, spark-submit's own default applies: ``local[*]``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys

from sparkmlops.environment import check_java


def _launches_local_jvm() -> bool:
    # Under spark-submit the JVM already runs (it passed us its gateway); over Spark Connect none is needed.
    return not (os.environ.get("PYSPARK_GATEWAY_PORT") or os.environ.get("SPARK_REMOTE")
                or os.environ.get("SPARK_CONNECT_MODE_ENABLED"))


def _runs_locally(master: str | None) -> bool:
    if master:
        return master.startswith("local")
    submit_args = os.environ.get("PYSPARK_SUBMIT_ARGS", "")
    match = re.search(r"--master[ =](\S+)", submit_args)
    return match is None or match.group(1).startswith("local")


def get_spark(app_name: str, master: str | None = None, conf: dict[str, str] | None = None):
    """Return the active SparkSession or create one.

    ``master``: overrides the environment's master only when given (non-empty).
    ``conf``: explicit settings (for tests and benchmarks), applied on top of the environment's.
    """
    if _launches_local_jvm():
        check_java()  # one clear line instead of "Java gateway process exited"
    if _launches_local_jvm() and _runs_locally(master):
        # Python workers (UDFs, SparkTrials, joblib-spark) otherwise run `python3` from PATH, which may be
        # another environment without the project's packages. On a cluster, set PYSPARK_PYTHON yourself.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if not is_connect(spark):
        spark.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "WARN"))
    return spark


def is_connect(spark) -> bool:
    """True for a Spark Connect session (no JVM on this side)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def spark_master(spark) -> str:
    if is_connect(spark):
        return os.environ.get("SPARK_REMOTE", "spark-connect")
    return spark.sparkContext.master


_SHIPPED: set[str] = set()


def ship_package(spark) -> None:
    """Make ``sparkmlops`` importable in the Python workers (functions they run refer to it), once per
    application: local workers may start in another directory, cluster executors have no copy at all."""
    import tempfile
    import zipfile
    from pathlib import Path

    app_id = spark.sparkContext.applicationId
    if app_id in _SHIPPED:
        return
    package = Path(__file__).resolve().parent
    archive = Path(tempfile.mkdtemp(prefix="sparkmlops-pkg-")) / "sparkmlops.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(package.rglob("*.py")):
            zf.write(path, str(path.relative_to(package.parent)))
    spark.sparkContext.addPyFile(str(archive))
    _SHIPPED.add(app_id)


def quiet_python_task_warnings() -> None:
    """Hide two warnings that SparkTrials and joblibspark print on every search and that need no action:
    pyspark's InheritableThread has no session to copy job tags from, and local mode has no stage-level
    scheduling."""
    import warnings

    warnings.filterwarnings("ignore", message="Spark session is not provided")
    warnings.filterwarnings("ignore", message="Spark local mode doesn't support stage-level scheduling")


@contextlib.contextmanager
def session_conf(spark, settings: dict[str, str]):
    """Set runtime SQL settings for the jobs run inside the block, then restore the previous values."""
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
