"""The Spark class archive: where it lives, and the option that lets a launched JVM map it.

Each entry point that starts its own JVM spends seconds loading and verifying the same Spark classes.
Java's dynamic class-data sharing dumps them once into an archive (``make spark-archive``:
tools/class_archive.py) that later JVMs map instead (``-XX:SharedArchiveFile``). The archive is keyed by
the Java and the Spark jars it was dumped from (their paths, sizes and modification times), so a
reinstalled environment or another Java looks for another archive. Linux and macOS only.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shlex
import shutil
from pathlib import Path

from sparkmlops.core.environment import check_java

OFF_SWITCH = "SPARKMLOPS_CLASS_ARCHIVE"  # =off: never map the archive
# A JVM whose classpath differs from the archive's ignores it, and says so on stdout unless told not to.
QUIET = "-Xlog:cds*=off"
# The user's own class-data sharing, which ours must not override (the JVM refuses some pairs).
USER_CDS = ("SharedArchiveFile", "ArchiveClassesAtExit", "Xshare", "Xlog:cds")
# The folder spark-submit puts first on the driver's classpath (else $SPARK_HOME/conf): with another one
# set, the archive's classpath never matches.
CONF_DIRS = ("SPARK_CONF_DIR",)


def spark_home() -> Path:
    """The Spark installation PySpark launches: $SPARK_HOME, else the one inside the pyspark package."""
    # found, not imported: entry points check their input before they import Spark
    return Path(os.environ.get("SPARK_HOME") or Path(importlib.util.find_spec("pyspark").origin).parent)


def _java_executable() -> Path:
    java = Path(os.environ["JAVA_HOME"]) / "bin" / "java" if os.environ.get("JAVA_HOME") else shutil.which("java")
    return Path(java).resolve()


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def archive_path() -> Path:
    """Where the archive for this Java and these Spark jars lives (it need not exist)."""
    java = _java_executable()
    modules = java.parents[1] / "lib" / "modules"  # the JDK's class image
    identity = [check_java(), _stamp(java), _stamp(modules) if modules.is_file() else ""]
    identity += sorted(_stamp(jar) for jar in (spark_home() / "jars").glob("*.jar"))
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparkmlops"
    return cache / f"spark-classes-{digest}.jsa"


def launch_options(user_options: str) -> str:
    """The JVM options that map the archive, for a JVM launched with ``user_options`` (every Java option the
    user gave it); "" when there is no archive, or the user switched it off or set class-data sharing
    themselves, or a configuration folder will lead the classpath."""
    if os.name == "nt" or os.environ.get(OFF_SWITCH) == "off" or any(o in user_options for o in USER_CDS):
        return ""
    if any(os.environ.get(name) for name in CONF_DIRS):
        return ""
    try:
        path = archive_path()
        if not path.is_file() or ":" in str(path):  # the JVM reads a colon as two archives
            return ""
    except (OSError, RuntimeError):  # no home folder, an unreadable cache, no java: only the speed is lost
        return ""
    return f"{shlex.quote(f'-XX:SharedArchiveFile={path}')} {QUIET}"


@contextlib.contextmanager
def mapped_while_launching(user_options: str):
    """Add the options to SPARK_SUBMIT_OPTS (which spark-submit's launcher puts on the driver's command line)
    only while the session starts: processes this one starts afterwards see the user's value and pick their
    own archive (one started meanwhile, from another thread, sees the options too)."""
    options = launch_options(user_options)
    saved = os.environ.get("SPARK_SUBMIT_OPTS")
    if options:
        os.environ["SPARK_SUBMIT_OPTS"] = f"{saved or ''} {options}".strip()
    try:
        yield
    finally:
        if options:
            if saved is None:
                os.environ.pop("SPARK_SUBMIT_OPTS", None)
            else:
                os.environ["SPARK_SUBMIT_OPTS"] = saved
