"""When a pipeline step's earlier run can stand in for running it again: the step's key.

A step's key is a digest of everything its result depends on: the code (the git commit, and the content
of any uncommitted change), the step's effective parameters, the identity of the data it reads (each
file's path, size and modification time), and the keys of the steps whose results it consumes. A FINISHED
run tagged with the same key is reused; any difference reruns the step and, through the keys, every step
after it. Everything here runs before Spark starts: a rerun with nothing changed starts no JVM.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from sparkmlops.core.environment import PROJECT_ROOT, git_output

STEP_KEY_TAG = "pipeline_step_key"
# Files Spark skips when it reads a folder (_SUCCESS, _spark_metadata, .crc checksums): not the data.
_NOT_DATA = ("_", ".")


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))  # lengths first: ("ab", "c") and ("a", "bc") differ
        digest.update(part)
    return digest.hexdigest()


# What makes the code: Python sources (not the tests' or benches'), the project's declaration and its pins.
# Anything else in the folder, a score output or a notebook written into the project, is not code.
CODE_PATHSPECS = ("*.py", "MLproject", "conda.yaml", "python_env.yaml", "requirements*.txt")
NOT_CODE_PATHSPECS = (":(exclude)tests/*", ":(exclude)bench/*")
# The installed libraries a result depends on (an environment other than the pins gives other results).
LIBRARIES = (
    *("pyspark", "mlflow", "scikit-learn", "xgboost-cpu", "hyperopt", "optuna"),
    *("onnx", "onnxruntime", "numpy", "pandas", "pyarrow"),
)


def library_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    return ",".join([f"python={sys.version.split()[0]}", *(f"{name}={installed(name)}" for name in LIBRARIES)])


def code_identity(path: Path = PROJECT_ROOT) -> str:
    """The commit of the tree holding the project, plus a digest of what differs from it in the project's
    code (tracked changes, staged or not, and untracked sources git does not ignore) and the installed
    libraries' versions; outside git, a digest of the package's and the scripts' sources."""
    libraries = library_versions().encode()
    try:
        commit = git_output(path, "rev-parse", "HEAD")
        if commit is not None:
            pathspecs = ("--", *CODE_PATHSPECS, *NOT_CODE_PATHSPECS)
            diff = git_output(path, "diff", "HEAD", "--binary", "--no-ext-diff", *pathspecs) or b""
            listed = git_output(path, "ls-files", "--others", "--exclude-standard", "-z", *pathspecs) or b""
            untracked = sorted(n for n in listed.decode().split("\0") if n)  # relative to ``path``
            contents = [name.encode() + b"\0" + (path / name).read_bytes() for name in untracked]
            return commit.decode().strip() + "+" + _sha256(diff, libraries, *contents)[:16]
    except OSError:
        pass
    sources = sorted([*path.glob("*.py"), *path.glob("sparkmlops/**/*.py")])
    return (
        "nogit+" + _sha256(libraries, *(p.relative_to(path).as_posix().encode() + p.read_bytes() for p in sources))[:16]
    )


def _pyarrow_uri(uri: str) -> str:
    """The URI pyarrow lists for a data path as the entry points take it: ``~`` expanded, ``file:/x`` as
    ``/x``, Hadoop's ``s3a://``/``s3n://`` as pyarrow's ``s3://``; a bare path made absolute."""
    if uri.startswith(("s3a://", "s3n://")):
        return "s3://" + uri.split("://", 1)[1]
    if uri.startswith("file:") and "://" not in uri:
        uri = uri[len("file:") :]
    return uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))


def data_identity(uri: str) -> str | None:
    """A digest of the data at ``uri`` (a file or a folder, local or any filesystem pyarrow opens): every
    data file's path, size and modification time. None when it cannot be listed (``dbfs:/``, a glob, a
    filesystem pyarrow does not have): a step reading it always runs."""
    from pyarrow import fs

    try:
        filesystem, root = fs.FileSystem.from_uri(_pyarrow_uri(uri))
        info = filesystem.get_file_info(root)
        if info.type == fs.FileType.File:
            return _sha256(f"{os.path.basename(root)}\0{info.size}\0{info.mtime_ns}".encode())[:32]
        if info.type != fs.FileType.Directory:
            return None
        files = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    except (OSError, ValueError):
        return None
    entries = []
    for f in files:
        relative = os.path.relpath(f.path, root)
        if f.type != fs.FileType.File or any(part.startswith(_NOT_DATA) for part in Path(relative).parts):
            continue
        entries.append(f"{relative}\0{f.size}\0{f.mtime_ns}".encode())
    return _sha256(*sorted(entries))[:32]


def step_key(
    step: str, code: str, params: dict[str, str], data: dict[str, str | None], upstream: dict[str, str]
) -> str | None:
    """The key of ``step`` with these inputs, or None when one of its data inputs has no identity."""
    if any(identity is None for identity in data.values()):
        return None
    payload = {"step": step, "code": code, "params": params, "data": data, "upstream": upstream}
    return _sha256(json.dumps(payload, sort_keys=True).encode())[:32]


def reusable_run(client, experiment_id: str, step: str, key: str | None):
    """The newest FINISHED run of ``step`` tagged with ``key``, or None (always None without a key)."""
    if key is None:
        return None
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{STEP_KEY_TAG} = '{key}' and tags.pipeline_step = '{step}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None
