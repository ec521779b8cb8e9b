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
import subprocess
from pathlib import Path

from sparkmlops.core.environment import PROJECT_ROOT

STEP_KEY_TAG = "pipeline_step_key"
# Files Spark skips when it reads a folder (_SUCCESS, _spark_metadata, .crc checksums): not the data.
_NOT_DATA = ("_", ".")


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))  # lengths first: ("ab", "c") and ("a", "bc") differ
        digest.update(part)
    return digest.hexdigest()


def code_identity(path: Path = PROJECT_ROOT) -> str:
    """The commit of the tree holding the project, plus a digest of what differs from it (tracked changes,
    staged or not, and untracked files git does not ignore); outside git, a digest of the package's and
    the scripts' sources."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, timeout=60)

    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode == 0:
            diff = git("diff", "HEAD", "--binary", "--no-ext-diff")
            untracked = git("ls-files", "--others", "--exclude-standard", "-z").stdout.split(b"\0")
            top = Path(git("rev-parse", "--show-toplevel").stdout.decode().strip())
            contents = [name + b"\0" + (top / name.decode()).read_bytes() for name in sorted(n for n in untracked if n)]
            changes = _sha256(diff.stdout, *contents) if diff.stdout or contents else ""
            return commit.stdout.decode().strip() + (f"+{changes[:16]}" if changes else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    sources = sorted([*path.glob("*.py"), *path.glob("sparkmlops/**/*.py")])
    return "nogit+" + _sha256(*(p.relative_to(path).as_posix().encode() + p.read_bytes() for p in sources))[:16]


def data_identity(uri: str) -> str | None:
    """A digest of the data at ``uri`` (a file or a folder, local or any filesystem pyarrow opens): every
    data file's path, size and modification time. None when it cannot be listed: such a step always reruns."""
    from pyarrow import fs

    try:
        filesystem, root = fs.FileSystem.from_uri(uri if "://" in uri else os.path.abspath(uri))
        info = filesystem.get_file_info(root)
        if info.type == fs.FileType.File:
            files = [info]
        elif info.type == fs.FileType.Directory:
            files = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
        else:
            return None
    except (OSError, ValueError):
        return None
    entries = []
    for f in files:
        relative = os.path.relpath(f.path, root) if f.path != root else os.path.basename(root)
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
