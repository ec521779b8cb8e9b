"""Writing Spark output so that a crash never leaves a half-written result at the target path.

Output goes to a hidden staging folder next to the target, and is renamed into place only once Spark
has committed it. Renames use Hadoop's FileSystem API, so they work for file:, hdfs: and other
filesystems with atomic directory renames (object stores such as s3a copy instead: see README). A Spark
Connect client has no JVM: it does the same with pyarrow's filesystems, on paths the server also sees.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
import uuid
from urllib.parse import urlparse

from sparkmlops.core import compat
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.spark import is_connect

MODES = ("error", "overwrite", "keep_existing")


class _HadoopFileSystem:
    """Hadoop's FileSystem API through the driver's JVM: the filesystems Spark itself writes to."""

    def __init__(self, spark, path: str):
        self._jvm = compat.jvm(spark)
        root = self._jvm.org.apache.hadoop.fs.Path(path)
        self._fs = root.getFileSystem(compat.hadoop_configuration(spark))
        self.target = root.toString()

    def _path(self, path: str):
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def sibling(self, name: str) -> str:
        return self._jvm.org.apache.hadoop.fs.Path(self._path(self.target).getParent(), name).toString()

    def exists(self, path: str) -> bool:
        return bool(self._fs.exists(self._path(path)))

    def rename(self, source: str, destination: str) -> bool:
        return bool(self._fs.rename(self._path(source), self._path(destination)))

    def delete(self, path: str) -> None:
        self._fs.delete(self._path(path), True)

    def list_files(self, path: str):
        """(path relative to ``path``, size, modification time) of every file under it."""
        root = self._fs.makeQualified(self._path(path))  # a relative path lists as absolute names
        root_str = root.toUri().getPath()
        files = self._fs.listFiles(root, True)
        while files.hasNext():
            status = files.next()
            name = status.getPath().toUri().getPath()
            yield (name[len(root_str):].lstrip("/") or status.getPath().getName(), status.getLen(),
                   status.getModificationTime())


class _ArrowFileSystem:
    """The same operations with pyarrow's filesystems, for a Spark Connect client (no JVM on this side).
    Paths are those the Connect server writes to, so they must be on a filesystem both reach."""

    def __init__(self, path: str):
        import pyarrow.fs as pafs

        if "://" in path and not path.startswith("file:"):
            self._fs, self.target = pafs.FileSystem.from_uri(path)
            self._scheme = path[: path.index("://") + 3]
        else:
            self._fs, self.target, self._scheme = pafs.LocalFileSystem(), self._local(path), ""
        self._fs_module = pafs

    @staticmethod
    def _local(path: str) -> str:
        return urlparse(path).path if path.startswith("file:") else os.path.abspath(path)

    def _strip(self, path: str) -> str:
        return path[len(self._scheme):] if self._scheme and path.startswith(self._scheme) else (
            self._local(path) if not self._scheme else path)

    def sibling(self, name: str) -> str:
        return self._scheme + posixpath.join(posixpath.dirname(self.target.rstrip("/")), name)

    def exists(self, path: str) -> bool:
        return self._fs.get_file_info(self._strip(path)).type != self._fs_module.FileType.NotFound

    def rename(self, source: str, destination: str) -> bool:
        if self.exists(destination):
            return False  # Hadoop's rename semantics: never into an existing target
        try:
            self._fs.move(self._strip(source), self._strip(destination))
        except OSError:
            return False
        return True

    def delete(self, path: str) -> None:
        info = self._fs.get_file_info(self._strip(path))
        if info.type == self._fs_module.FileType.Directory:
            self._fs.delete_dir(info.path)
        elif info.type == self._fs_module.FileType.File:
            self._fs.delete_file(info.path)

    def list_files(self, path: str):
        root = self._strip(path).rstrip("/")
        info = self._fs.get_file_info(root)
        if info.type == self._fs_module.FileType.File:
            yield info.base_name, info.size, int(info.mtime_ns // 1_000_000)
            return
        for entry in self._fs.get_file_info(self._fs_module.FileSelector(root, recursive=True)):
            if entry.type == self._fs_module.FileType.File:
                yield entry.path[len(root):].lstrip("/"), entry.size, int(entry.mtime_ns // 1_000_000)


def _filesystem(spark, path: str):
    return _ArrowFileSystem(path) if is_connect(spark) else _HadoopFileSystem(spark, path)


def path_exists(spark, path: str) -> bool:
    fs = _filesystem(spark, path)
    return fs.exists(fs.target)


def write_parquet_atomically(df, output_path: str, mode: str = "error") -> str:
    """Write ``df`` as parquet to ``output_path`` via a staging folder and a rename.

    mode: ``error`` (refuse an existing output), ``overwrite`` (replace it only after the new output is
    complete), ``keep_existing`` (another writer won the race: keep theirs; for caches).
    """
    if mode not in MODES:
        raise UserInputError(f"mode must be one of {', '.join(MODES[:2])}, got '{mode}'.")
    spark = df.sparkSession
    fs = _filesystem(spark, output_path)
    target = fs.target
    if mode == "error" and fs.exists(target):
        raise UserInputError(f"output '{output_path}' already exists: choose a new path or pass mode=overwrite.")
    name = posixpath.basename(target.rstrip("/"))
    token = uuid.uuid4().hex[:12]
    staging = fs.sibling(f".{name}.staging-{token}")
    try:
        df.write.mode("error").parquet(staging)
        if fs.exists(target):
            if mode == "keep_existing":
                return output_path
            if mode == "error":
                raise UserInputError(f"output '{output_path}' appeared while writing: choose a new path "
                                     "or pass mode=overwrite.")
            # Move the old output aside first so the target is never a mix of old and new files.
            previous = fs.sibling(f".{name}.previous-{token}")
            if not fs.rename(target, previous):
                raise RuntimeError(f"could not move the previous output '{output_path}' aside")
            if not fs.rename(staging, target):
                fs.rename(previous, target)
                raise RuntimeError(f"could not move the new output into '{output_path}'")
            fs.delete(previous)
        elif not fs.rename(staging, target):
            if mode == "keep_existing" and fs.exists(target):
                return output_path
            raise RuntimeError(f"could not move the new output into '{output_path}'")
    finally:
        _delete_staging(fs, staging)
    return output_path


def _delete_staging(fs, staging, checks: int = 8, pause_seconds: float = 0.25) -> None:
    """Delete the staging folder left by a failed write, and again if it comes back: when a job fails,
    Spark cancels its other running tasks asynchronously, and one may still write into the folder for a
    moment after the first delete. After a successful write the folder was renamed away: no wait."""
    if not fs.exists(staging):
        return
    fs.delete(staging)
    for _ in range(checks):
        time.sleep(pause_seconds)
        if fs.exists(staging):
            fs.delete(staging)


def files_digest(spark, path: str) -> tuple[str, int]:
    """(digest, file count) of the data files under ``path`` from their names, sizes and modification
    times: O(files), not O(rows), so scoring large inputs pays no extra pass for it."""

    fs = _filesystem(spark, path)
    entries = [f"{relative}|{size}|{mtime}" for relative, size, mtime in fs.list_files(fs.target)
               # _SUCCESS, _spark_metadata, .crc and staging files are not data
               if not any(part.startswith((".", "_")) for part in relative.split("/"))]
    entries.sort()
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16], len(entries)
