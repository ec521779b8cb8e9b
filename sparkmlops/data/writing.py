"""Writing Spark output so that a crash or a second writer never leaves a half-written, mixed or nested
result at the target path.

Output goes to a hidden staging folder next to the target (``.<name>.staging-<token>``) and is moved into
place only once Spark has committed it, by a rename that refuses an existing target instead of moving
the folder *into* it (what a plain POSIX or Hadoop rename of a folder onto an existing folder does):

- local paths (``/data/out``, ``file:``, also over Spark Connect, where the server writes the same
  filesystem): ``renameat2(RENAME_NOREPLACE)``, and for ``mode=overwrite`` ``renameat2(RENAME_EXCHANGE)``,
  which swaps the new output and the old one in one step (Linux; elsewhere see below);
- other filesystems, in a classic session: Hadoop's ``FileContext.rename(..., Options.Rename.NONE)``
  (atomic on HDFS; on object stores such as ``s3a://`` a rename is a copy, so use a committer made for
  them). Over Spark Connect only local paths can be written (checked before Spark starts): the client
  has no JVM, and pyarrow's object-store filesystems cannot move folders.

Where there is no atomic exchange, an overwrite moves the old output aside
(``.<name>.previous-<token>-<pid>-<host>``) and the new one in; a kill between the two leaves no output,
and the next write to that path (any mode) first moves the old output back, once that writer is known to
be gone. docs/scoring.md says what each mode guarantees.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import posixpath
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass

from sparkmlops.core import compat
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.spark import is_connect
from sparkmlops.data.paths import is_local_path, local_path

MODES = ("error", "overwrite", "keep_existing")
STAGING, PREVIOUS, TRASH = ".staging-", ".previous-", ".trash-"
# An old output moved aside by a writer that is not known to be dead is left alone for this long: its
# writer may be between its two moves (a second on HDFS), not killed.
PREVIOUS_KEPT_SECONDS = 3600


def _local(path: str) -> str:
    return os.path.abspath(os.path.expanduser(local_path(path)))


# ----------------------------------------------------------------------------------------------
# Renames that never replace, and never move into, an existing target

_RENAME_NOREPLACE, _RENAME_EXCHANGE, _AT_FDCWD = 1, 2, -100
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_RENAMEAT2 = getattr(_LIBC, "renameat2", None)


def _renameat2(source: str, destination: str, flags: int) -> None:
    """Linux renameat2(2) (glibc >= 2.28). OSError(ENOSYS/EINVAL) where the kernel or filesystem lacks it."""
    if _RENAMEAT2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), source, None, destination)


class LocalFileSystem:
    """The driver's own filesystem, with Python's os module (no JVM needed)."""

    def __init__(self, path: str):
        self.target = _local(path)

    def sibling(self, name: str) -> str:
        return os.path.join(os.path.dirname(self.target.rstrip(os.sep)), name)

    def siblings(self, prefix: str) -> list[str]:
        parent = os.path.dirname(self.target.rstrip(os.sep))
        return [os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(prefix)] if os.path.isdir(
            parent) else []

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def rename_new(self, source: str, destination: str) -> bool:
        """Move ``source`` to ``destination`` in one step; False, changing nothing, if it exists."""
        try:
            _renameat2(source, destination, _RENAME_NOREPLACE)
            return True
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                return False
            if exc.errno not in (errno.ENOSYS, errno.EINVAL):
                raise
        # No renameat2 here: a folder's rename(2) fails on a non-empty folder or a file (ENOTEMPTY, EEXIST,
        # ENOTDIR), and never moves into it; only an empty folder created in between could be replaced.
        if os.path.lexists(destination):
            return False
        try:
            os.rename(source, destination)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                return False
            raise
        return True

    def exchange(self, first: str, second: str) -> bool:
        """Swap two existing paths in one step; False where the platform cannot (nothing changed)."""
        try:
            _renameat2(first, second, _RENAME_EXCHANGE)
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EINVAL):
                return False
            raise

    def delete(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)

    def modified(self, path: str) -> float:
        return os.stat(path).st_mtime

    def list_files(self, path: str):
        """(path relative to ``path``, size, modification time in ms) of every file under it."""
        root = _local(path)
        if os.path.isfile(root):
            stat = os.stat(root)
            yield os.path.basename(root), stat.st_size, stat.st_mtime_ns // 1_000_000  # ms, as Java's File
            return
        for folder, _, names in os.walk(root):
            for name in names:
                full = os.path.join(folder, name)
                stat = os.stat(full)
                yield os.path.relpath(full, root).replace(os.sep, "/"), stat.st_size, stat.st_mtime_ns // 1_000_000


class _HadoopFileSystem:
    """Hadoop's filesystems through the driver's JVM (classic sessions): the ones Spark itself writes to.
    Renames go through ``FileContext``, whose ``Options.Rename.NONE`` refuses an existing target;
    ``FileSystem.rename`` would move the folder into it."""

    def __init__(self, spark, path: str):
        self._jvm = compat.jvm(spark)
        self._conf = compat.hadoop_configuration(spark)
        root = self._jvm.org.apache.hadoop.fs.Path(path)
        self._fs = root.getFileSystem(self._conf)
        self.target = self._fs.makeQualified(root).toString()
        self._spark = spark

    def _path(self, path: str):
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def sibling(self, name: str) -> str:
        return self._jvm.org.apache.hadoop.fs.Path(self._path(self.target).getParent(), name).toString()

    def siblings(self, prefix: str) -> list[str]:
        parent = self._path(self.target).getParent()
        if not self._fs.exists(parent):
            return []
        return [s.getPath().toString() for s in self._fs.listStatus(parent) if s.getPath().getName().startswith(prefix)]

    def exists(self, path: str) -> bool:
        return bool(self._fs.exists(self._path(path)))

    def rename_new(self, source: str, destination: str) -> bool:
        # Made here, when a rename is needed: FileContext needs the scheme's AbstractFileSystem, which reading
        # (list_files, exists) must not require.
        hadoop_fs = self._jvm.org.apache.hadoop.fs
        context = hadoop_fs.FileContext.getFileContext(self._path(self.target).toUri(), self._conf)
        no_replace = compat.java_array(self._spark, hadoop_fs.Options.Rename, [hadoop_fs.Options.Rename.NONE])
        try:
            context.rename(self._path(source), self._path(destination), no_replace)
            return True
        except Exception as exc:  # py4j wraps the Java exception
            if "FileAlreadyExistsException" in str(exc) and self.exists(destination):
                return False
            raise

    def exchange(self, first: str, second: str) -> bool:
        return False  # no atomic exchange in Hadoop's API

    def delete(self, path: str) -> None:
        self._fs.delete(self._path(path), True)

    def modified(self, path: str) -> float:
        return self._fs.getFileStatus(self._path(path)).getModificationTime() / 1000

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


class _ArrowListing:
    """A remote input seen from a Spark Connect client (no JVM on this side): listing only, with pyarrow's
    filesystems, for the input digest. Output to such a path is refused before Spark starts."""

    def __init__(self, path: str):
        import pyarrow.fs as pafs

        self._fs, self.target = pafs.FileSystem.from_uri(path)
        self._pafs = pafs

    def exists(self, path: str) -> bool:
        return self._fs.get_file_info(self.target).type != self._pafs.FileType.NotFound

    def list_files(self, path: str):
        root = self.target.rstrip("/")
        info = self._fs.get_file_info(root)
        if info.type == self._pafs.FileType.File:
            yield info.base_name, info.size, int(info.mtime_ns // 1_000_000)
            return
        for entry in self._fs.get_file_info(self._pafs.FileSelector(root, recursive=True)):
            if entry.type == self._pafs.FileType.File:
                yield entry.path[len(root):].lstrip("/"), entry.size, int(entry.mtime_ns // 1_000_000)


def _filesystem(spark, path: str):
    if is_local_path(path):
        return LocalFileSystem(path)
    return _ArrowListing(path) if is_connect(spark) else _HadoopFileSystem(spark, path)


def path_exists(spark, path: str) -> bool:
    fs = _filesystem(spark, path)
    return fs.exists(fs.target)


# ----------------------------------------------------------------------------------------------
# The atomic write


@dataclass(frozen=True)
class Written:
    path: str
    rows: int  # rows of the output this call put (or, keep_existing, found) at the path


def write_parquet_atomically(df, output_path: str, mode: str = "error") -> Written:
    """Write ``df`` as parquet to ``output_path`` via a staging folder and a rename.

    mode: ``error`` (refuse an existing output, also one another writer moves in while this one writes),
    ``overwrite`` (replace it only once the new output is complete), ``keep_existing`` (another writer won
    the race: keep theirs; for caches). The rows are counted from the staging folder's parquet footers,
    before it is moved: never another writer's.
    """
    if mode not in MODES:
        raise UserInputError(f"mode must be one of {', '.join(MODES[:2])}, got '{mode}'.")
    spark = df.sparkSession
    fs = _filesystem(spark, output_path)
    if isinstance(fs, _ArrowListing):  # refused before Spark by validation.check_output_path; never half-done
        raise UserInputError(f"output '{output_path}' cannot be written over Spark Connect: use a local path.")
    restore_interrupted_overwrite(fs)
    target = fs.target
    if mode == "error" and fs.exists(target):
        raise UserInputError(f"output '{output_path}' already exists: choose a new path or pass mode=overwrite.")
    if mode == "keep_existing" and fs.exists(target):
        return Written(output_path, spark.read.parquet(output_path).count())
    name = posixpath.basename(target.rstrip("/"))
    token = uuid.uuid4().hex[:12]
    staging = fs.sibling(f".{name}{STAGING}{token}")
    try:
        df.write.mode("error").parquet(staging)
        rows = _rows_written(spark, fs, staging)
        if fs.rename_new(staging, target):
            return Written(output_path, rows)
        # The target exists now (it did before, or another writer moved theirs in meanwhile).
        if mode == "keep_existing":
            return Written(output_path, spark.read.parquet(output_path).count())
        if mode == "error":
            raise UserInputError(f"output '{output_path}' appeared while writing (another writer): choose a new "
                                 "path or pass mode=overwrite; nothing of this run was written there.")
        _replace(fs, staging, target, fs.sibling(f".{name}{PREVIOUS}{token}-{_owner()}"), output_path)
        if fs.exists(staging):
            fs.delete(staging)  # after an exchange it holds the old output
        return Written(output_path, rows)
    except BaseException:
        _delete_staging(fs, staging)
        raise


def _rows_written(spark, fs, folder: str) -> int:
    """Rows in the parquet files of ``folder``, from their footers. Read as files, not as the folder: Spark
    skips a folder whose name starts with '.' (the staging folder's) and would find nothing."""
    files = [f"{folder.rstrip('/')}/{relative}" for relative, _, _ in fs.list_files(folder)
             if relative.endswith(".parquet") and not any(p.startswith((".", "_")) for p in relative.split("/"))]
    return spark.read.parquet(*files).count() if files else 0


def _replace(fs, staging: str, target: str, previous: str, output_path: str) -> None:
    """Put the complete new output at ``target`` in place of the old one. With an atomic exchange the old
    output ends up at the staging path (deleted after); without one, it is moved aside to ``previous``
    first, so the target is never a mix of old and new files."""
    if fs.exchange(staging, target):
        return  # the caller deletes the staging path, which now holds the old output
    if not fs.rename_new(target, previous):
        raise RuntimeError(f"could not move the previous output '{output_path}' aside")
    if not fs.rename_new(staging, target):
        # Another writer moved its output in meanwhile: it won; the old output is not needed any more.
        _discard(fs, previous)
        raise RuntimeError(f"could not move the new output into '{output_path}': another writer replaced it first")
    _discard(fs, previous)


def _discard(fs, previous: str) -> None:
    """Delete an old output moved aside, renamed first so that a delete cut short never leaves a partial
    folder under the name ``restore_interrupted_overwrite`` would move back."""
    trash = previous.replace(PREVIOUS, TRASH, 1)
    fs.delete(trash if fs.rename_new(previous, trash) else previous)


def _owner() -> str:
    """Who moves an output aside: ``<pid>-<host>``, so that only a writer known to be gone is recovered from."""
    return f"{os.getpid()}-{socket.gethostname()}"


def _writer_gone(name: str, modified: float) -> bool:
    """Whether the writer that moved an old output aside (its folder's ``name``) has ended: on this host,
    its process is gone; elsewhere (or unknown), the folder is older than PREVIOUS_KEPT_SECONDS."""
    owner = name.split(PREVIOUS, 1)[1][13:]  # after "<token>-"
    pid, _, host = owner.partition("-")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return time.time() - modified > PREVIOUS_KEPT_SECONDS


def restore_interrupted_overwrite(fs) -> str:
    """An overwrite killed between moving the old output aside and moving the new one in leaves no output
    and the old one hidden at ``.<name>.previous-<token>-<pid>-<host>``: move it back (the newest, if a
    crash left several) once its writer is known to be gone; a writer still between its two moves is left
    to finish. Returns the restored folder, or ''."""
    if fs.exists(fs.target):
        return ""
    name = posixpath.basename(fs.target.rstrip("/"))
    left = [(p, fs.modified(p)) for p in fs.siblings(f".{name}{PREVIOUS}") if fs.exists(p)]
    for previous, modified in sorted(left, key=lambda item: item[1], reverse=True):
        if _writer_gone(posixpath.basename(previous), modified) and fs.rename_new(previous, fs.target):
            print(f"warning: restored the output at '{fs.target}' that an interrupted overwrite had moved aside "
                  f"({posixpath.basename(previous)}).", file=sys.stderr, flush=True)
            return previous
    return ""


def _delete_staging(fs, staging, checks: int = 8, pause_seconds: float = 0.25) -> None:
    """Delete the staging folder left by a failed write, and again if it comes back: when a job fails,
    Spark cancels its other running tasks asynchronously, and one may still write into the folder for a
    moment after the first delete."""
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
