"""The project's one SparkSession factory.

The master and configuration come from where Spark users put them: ``spark-submit --master``,
``PYSPARK_SUBMIT_ARGS``, ``$SPARK_CONF_DIR/spark-defaults.conf`` or ``SPARK_REMOTE`` (Spark Connect).
The factory only adds what the caller passes explicitly (the ``spark_master`` entry-point parameter,
``sc://`` for Connect; test settings); with nothing set anywhere, spark-submit's own default applies:
``local[*]``. Nothing here reads or writes through the JVM unless the session is a classic one.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shlex
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import sparkmlops
from sparkmlops.core import class_archive
from sparkmlops.core.environment import check_java
from sparkmlops.core.errors import UserInputError


def _launches_local_jvm(master: str | None = None) -> bool:
    # Under spark-submit the JVM already runs (it passed us its gateway); over Spark Connect to a server
    # none is needed here, except for a local one (SPARK_REMOTE=local[*]): this process starts its JVM,
    # or, with SPARK_LOCAL_CONNECT_REUSE=1, the warm one it reuses (make spark-up).
    if os.environ.get("PYSPARK_GATEWAY_PORT"):
        return False
    return not connect_requested(master) or requested_master(master).startswith("local")


def _user_java_options(conf: dict[str, str] | None) -> str:
    """Every Java option the user gives the driver's JVM, wherever from (for class_archive)."""
    keys = ("spark.driver.extraJavaOptions", "spark.driver.defaultJavaOptions")
    variables = ("SPARK_SUBMIT_OPTS", "PYSPARK_SUBMIT_ARGS", "JDK_JAVA_OPTIONS", "JAVA_TOOL_OPTIONS")
    given = [os.environ.get(name, "") for name in variables]
    given += [settings.get(key, "") for settings in (spark_defaults(), conf or {}) for key in keys]
    return " ".join(given)


def spark_defaults() -> dict[str, str]:
    """spark-defaults.conf where spark-submit looks for it ($SPARK_CONF_DIR, else $SPARK_HOME/conf), read as
    Spark reads it: a Java properties file in UTF-8 (``=``, ``:`` or spaces between key and value, ``\\``
    continuations and escapes, the last of repeated keys wins), each value trimmed as Java's
    ``String.trim`` does (``Utils.getPropertiesFromFile``). Empty when there is no such file."""
    import javaproperties

    conf_dir = os.environ.get("SPARK_CONF_DIR") or (
        os.path.join(os.environ["SPARK_HOME"], "conf") if os.environ.get("SPARK_HOME") else None
    )
    path = os.path.join(conf_dir, "spark-defaults.conf") if conf_dir else ""
    if not path or not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as conf:
        return {key: value.strip(_JAVA_TRIMMED) for key, value in javaproperties.load(conf).items()}


# What Java's String.trim removes from both ends: every character up to and including the space.
_JAVA_TRIMMED = "".join(map(chr, range(33)))


def requested_master(master: str | None = None) -> str:
    """The master a new session will get, read from the places Spark reads, in Spark's order: the
    ``spark_master`` parameter, ``SPARK_REMOTE``, ``PYSPARK_SUBMIT_ARGS --master``, spark-defaults.conf,
    else ``local[*]``. (Under spark-submit the JVM is already up with the master it was given.)"""
    if master:
        return master
    if os.environ.get("SPARK_REMOTE"):
        return os.environ["SPARK_REMOTE"]
    submitted = _submit_args_master()
    if submitted:
        return submitted
    return spark_defaults().get("spark.master") or "local[*]"


def _submit_args_master() -> str:
    """``--master`` of PYSPARK_SUBMIT_ARGS, split with shell quoting as Spark's launcher splits it."""
    try:
        words = shlex.split(os.environ.get("PYSPARK_SUBMIT_ARGS", ""))
    except ValueError:
        return ""
    for word, following in zip(words, words[1:] + [""]):
        if word == "--master":
            return following
        if word.startswith("--master="):
            return word.split("=", 1)[1]
    return ""


_ENTRY_POINT_MASTER: dict[str, str] = {}


def declare_master(master: str) -> None:
    """The ``spark_master`` parameter of the entry point about to validate its inputs, so that checks made
    before Spark starts (outputs over Connect) know where Spark will run."""
    _ENTRY_POINT_MASTER["master"] = master


def will_use_connect() -> bool:
    """Whether the entry point's session will be a Spark Connect client (its parameter, else the environment)."""
    return connect_requested(_ENTRY_POINT_MASTER.get("master") or None)


def declared_master() -> str:
    """The master the declared entry point's session will get (its ``spark_master``, else the environment's)."""
    return requested_master(_ENTRY_POINT_MASTER.get("master") or None)


def connect_requested(master: str | None = None) -> bool:
    """True when the session will be a Spark Connect client (``sc://`` master or SPARK_REMOTE)."""
    if master:
        return master.startswith("sc://")
    return bool(os.environ.get("SPARK_REMOTE") or os.environ.get("SPARK_CONNECT_MODE_ENABLED"))


_MASTER_URL = re.compile(
    r"^(local(\[(\*|\d+)(,\s*\d+)?\])?|local-cluster\[\d+,\s*\d+,\s*\d+\]|yarn"
    r"|(spark|k8s|mesos)://\S+|sc://\S+)$"
)


def check_master(master: str | None) -> None:
    """Refuse, before any JVM starts, a malformed ``spark_master`` or one that contradicts ``SPARK_REMOTE``."""
    if master and not _MASTER_URL.match(master):
        raise UserInputError(
            f"spark_master '{master}' is not a Spark master URL: use local[*], local[N], "
            "spark://host:7077, yarn, k8s://https://host:port or sc://host:15002 (Spark Connect), "
            "or leave it empty to take the environment's."
        )
    remote = os.environ.get("SPARK_REMOTE")
    if master and remote and master != remote:
        raise UserInputError(
            f"spark_master is '{master}' but SPARK_REMOTE is '{remote}': "
            "unset SPARK_REMOTE or drop -P spark_master, so that one says where Spark runs."
        )


_REMOTE_URL: dict[str, str] = {}


def get_spark(app_name: str, master: str | None = None, conf: dict[str, str] | None = None):
    """Return the active SparkSession or create one.

    ``master``: overrides the environment's master only when given (non-empty); ``sc://host:port``
    makes a Spark Connect session. ``conf``: explicit settings (for tests and benchmarks), applied on
    top of the environment's.
    """
    check_master(master)
    if _launches_local_jvm(master):
        check_java()  # one clear line instead of "Java gateway process exited"
        # Python workers (UDFs, SparkTrials, joblib-spark) run PYSPARK_PYTHON, else `python3` from PATH,
        # which may be another environment without the project's packages. spark-submit takes it from
        # spark.pyspark.python in spark-defaults.conf; a session started from Python must do so itself.
        # In local mode the workers are this machine's: this Python. On a cluster, set one of the two.
        configured = spark_defaults().get("spark.pyspark.python")
        if configured:
            os.environ.setdefault("PYSPARK_PYTHON", configured)
        elif requested_master(master).startswith("local"):
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master and master.startswith("sc://"):
        _REMOTE_URL["url"] = master
        if not os.environ.get("SPARK_REMOTE"):
            builder = builder.remote(master)
    elif master:
        builder = builder.master(master)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    launching = _launches_local_jvm(master) and not connect_requested(master)
    with class_archive.mapped_while_launching(_user_java_options(conf)) if launching else contextlib.nullcontext():
        spark = builder.getOrCreate()
    if is_connect(spark):
        # PySpark 4.1's Connect ML objects release their server-side copy from __del__ with a gRPC call;
        # run by the cyclic garbage collector at an arbitrary point, that call can deadlock the client
        # (SPARK-55020, SPARK-57655; seen here: `train` hung in release_ref). Reference counting still
        # frees memory; cycles wait until the process ends, which for one job is fine.
        gc.disable()
    else:
        spark.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "WARN"))
    return spark


def end_connect_session(spark) -> None:
    """Over Spark Connect, release the job's server-side objects while the client is fully alive, then
    close the session: left to interpreter shutdown, their __del__ gRPC calls can hang the exit."""
    if spark is not None and is_connect(spark):
        gc.collect()
        spark.stop()


def is_connect(spark) -> bool:
    """True for a Spark Connect session (no JVM on this side)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def spark_master(spark) -> str:
    """The master, for the run's tags; over Connect, the server's URL and the server's own master."""
    if is_connect(spark):
        remote = os.environ.get("SPARK_REMOTE") or _REMOTE_URL.get("url", "sc://")
        return f"{remote} (server master {spark.conf.get('spark.master', '?')})"
    return spark.sparkContext.master


_SHIPPED: set[str] = set()


def ship_package(spark) -> None:
    """Make ``sparkmlops`` importable in the Python workers (functions they run refer to it), once per
    application: local workers may start in another directory, cluster executors have no copy at all."""
    app_id = spark.sparkContext.applicationId
    if app_id in _SHIPPED:
        return
    spark.sparkContext.addPyFile(str(package_archive(application_files_dir(spark))))
    _SHIPPED.add(app_id)


def application_files_dir(spark) -> Path:
    """A folder for files shipped to the executors (addFile, addPyFile), which must stay readable while the
    application runs (executors that start later fetch them from the driver), and is deleted with it: a
    folder inside Spark's own directory for the application's files, which Spark removes when it stops."""
    from pyspark import SparkFiles

    folder = Path(SparkFiles.getRootDirectory()) / "sparkmlops-shipped"
    folder.mkdir(exist_ok=True)
    return folder


def package_archive(folder: Path) -> Path:
    """The whole ``sparkmlops`` package (every subfolder's modules) as a zip for addPyFile, in ``folder``."""

    package = Path(sparkmlops.__file__).resolve().parent
    archive = Path(tempfile.mkdtemp(prefix="sparkmlops-pkg-", dir=folder)) / "sparkmlops.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(package.rglob("*.py")):
            zf.write(path, str(path.relative_to(package.parent)))
    return archive


def quiet_python_task_warnings() -> None:
    """Hide two warnings that SparkTrials and joblibspark print on every search and that need no action:
    pyspark's InheritableThread has no session to copy job tags from, and local mode has no stage-level
    scheduling."""

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
