"""Atomic parquet output: nothing half-written, previous output kept on failure, a second writer never
mixed in or nested, an interrupted overwrite recovered. The race tests run each way the writer renames:
Python's renameat2 on local paths, and Hadoop's FileContext, here on file: (the calls an hdfs:// path
makes; that the rename is atomic there is HDFS's own guarantee, which these tests cannot show)."""

import os
import threading

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType

from sparkmlops.core.errors import UserInputError
from sparkmlops.data import validation, writing
from sparkmlops.data.writing import write_parquet_atomically


def _leftovers(folder):
    return [n for n in os.listdir(folder) if ".staging-" in n or ".previous-" in n]


def _failing_frame(spark):
    @F.udf(DoubleType())
    def explode(x):
        if x == 150:
            raise ValueError("boom in the middle of the write")
        return float(x)

    return spark.range(0, 300, 1, 3).select(explode("id").alias("v"))


def test_write_then_error_mode_refuses(spark, tmp_path):
    out = str(tmp_path / "out")
    write_parquet_atomically(spark.range(5), out)
    assert spark.read.parquet(out).count() == 5
    with pytest.raises(UserInputError, match="already exists"):
        write_parquet_atomically(spark.range(7), out)
    assert spark.read.parquet(out).count() == 5


def test_overwrite_replaces(spark, tmp_path):
    out = str(tmp_path / "out")
    write_parquet_atomically(spark.range(5), out)
    write_parquet_atomically(spark.range(9), out, mode="overwrite")
    assert spark.read.parquet(out).count() == 9
    assert _leftovers(tmp_path) == []


def test_failure_leaves_nothing(spark, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Exception, match="boom"):
        write_parquet_atomically(_failing_frame(spark), str(out))
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_failed_overwrite_keeps_previous_output(spark, tmp_path):
    out = str(tmp_path / "out")
    write_parquet_atomically(spark.range(4), out)
    with pytest.raises(Exception, match="boom"):
        write_parquet_atomically(_failing_frame(spark), out, mode="overwrite")
    assert sorted(r.id for r in spark.read.parquet(out).collect()) == [0, 1, 2, 3]
    assert _leftovers(tmp_path) == []


@pytest.fixture(params=["local", "hadoop"])
def renames(request, spark, monkeypatch):
    """Which filesystem code writes local paths in the test: the writer's own choice (local), or Hadoop's."""
    if request.param == "hadoop":
        monkeypatch.setattr(writing, "_filesystem", lambda session, path: writing._HadoopFileSystem(session, path))
    return request.param


def _nested(folder) -> list[str]:
    """Hidden folders inside an output: what a rename *into* an existing folder leaves."""
    return [n for n in os.listdir(folder) if n.startswith(".") and not n.endswith(".crc")]


def _ids(spark, path) -> list[int]:
    return sorted(r.id for r in spark.read.parquet(str(path)).collect())


@pytest.mark.parametrize("mode", ["error", "overwrite"])
def test_an_output_moved_in_after_the_check_is_never_entered(spark, tmp_path, monkeypatch, renames, mode):
    """Another writer moves its output in between this writer's last look and its move (simulated by a
    view of the filesystem that does not see the target yet): mode=error refuses, and leaves theirs whole;
    mode=overwrite replaces it whole. Never a folder moved *into* theirs."""
    out = tmp_path / "out"
    spark.range(3).coalesce(1).write.parquet(str(out))  # the other writer's output, already there
    real = writing._filesystem

    class StaleView:
        def __init__(self, fs):
            self._fs = fs

        def __getattr__(self, name):
            return getattr(self._fs, name)

        def exists(self, path):
            return False if path == self._fs.target else self._fs.exists(path)

    monkeypatch.setattr(writing, "_filesystem", lambda session, path: StaleView(real(session, path)))
    if mode == "error":
        with pytest.raises(UserInputError, match="appeared while writing"):
            write_parquet_atomically(spark.range(100, 105), str(out))
        assert _ids(spark, out) == [0, 1, 2], "the other writer's output changed"
    else:
        assert write_parquet_atomically(spark.range(100, 105), str(out), mode="overwrite").rows == 5
        assert _ids(spark, out) == [100, 101, 102, 103, 104]
    assert _nested(out) == [] and _leftovers(tmp_path) == []


def _slow(df):
    """``df`` in one partition written a second slower, so that two writers started together overlap."""
    @F.udf("long")
    def after_a_second(value):
        import time

        if value == 0:
            time.sleep(1.0)
        return value

    return df.coalesce(1).withColumn("id", after_a_second("id"))


def test_two_writers_at_once_one_wins_whole(spark, tmp_path, renames):
    """Two mode=error writes of one output at the same time, three rounds: exactly one succeeds and counts
    its own rows; the other is refused; the output is the winner's, nothing nested, nothing left over."""
    for round_ in range(3):
        out = tmp_path / f"out-{round_}"
        outcomes: dict[int, object] = {}

        def write(size):
            try:
                outcomes[size] = write_parquet_atomically(_slow(spark.range(size)), str(out)).rows
            except UserInputError as exc:
                outcomes[size] = exc

        threads = [threading.Thread(target=write, args=(size,)) for size in (7, 11)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        winners = [size for size, outcome in outcomes.items() if outcome == size]
        assert len(winners) == 1, outcomes
        loser = next(o for o in outcomes.values() if isinstance(o, UserInputError))
        # Both were writing when the first moved its output in: the other meets it at its own move.
        assert "appeared while writing" in str(loser), loser
        assert _ids(spark, out) == list(range(winners[0]))
        assert _nested(out) == [] and _leftovers(tmp_path) == []


def _ended_pid() -> int:
    """The pid of a process that has ended (a writer killed mid-way)."""
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_an_overwrite_killed_between_its_moves_is_recovered(spark, tmp_path, renames):
    """Without an atomic exchange (Hadoop's API), an overwrite moves the old output aside, then the new one
    in; a kill in between leaves no output and the old one hidden. The next write to the path puts it back
    first: here a mode=error run, which then refuses the existing output, and before Spark for local paths."""
    import socket

    out = tmp_path / "out"
    write_parquet_atomically(spark.range(4), str(out))
    os.rename(out, tmp_path / f".out.previous-0123456789ab-{_ended_pid()}-{socket.gethostname()}")  # the kill's state
    if renames == "local":
        with pytest.raises(UserInputError, match="already exists"):
            validation.check_output_path(str(out), "error")
    else:
        with pytest.raises(UserInputError, match="already exists"):
            write_parquet_atomically(spark.range(9), str(out))
    assert _ids(spark, out) == [0, 1, 2, 3] and _leftovers(tmp_path) == []
    write_parquet_atomically(spark.range(9), str(out), mode="overwrite")
    assert _ids(spark, out) == list(range(9)) and _leftovers(tmp_path) == []


def test_an_overwrite_still_between_its_moves_is_left_to_finish(spark, tmp_path):
    """An old output moved aside by a writer that is still running (here this process) is not taken back
    by another job on the path: that writer is about to move its new output in."""
    import socket

    out = tmp_path / "out"
    write_parquet_atomically(spark.range(4), str(out))
    aside = tmp_path / f".out.previous-0123456789ab-{os.getpid()}-{socket.gethostname()}"
    os.rename(out, aside)
    validation.check_output_path(str(out), "error")  # the path is free: no refusal, no restore
    assert not out.exists() and aside.exists()


def test_a_local_overwrite_never_leaves_the_path_empty(spark, tmp_path):
    """On a local filesystem an overwrite swaps the new output and the old one in one step: a reader
    looking all the while never finds the path without a complete output."""
    import time

    probe = writing.LocalFileSystem(str(tmp_path / "a"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert probe.exchange(str(tmp_path / "a"), str(tmp_path / "b")), "no renameat2(RENAME_EXCHANGE) here"
    out = tmp_path / "out"
    write_parquet_atomically(spark.range(3), str(out))
    missing, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            if not (out / "_SUCCESS").exists():
                missing.append(1)
            time.sleep(0.0002)  # a reader that looks often, without taking a whole core

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for size in range(4, 9):
            write_parquet_atomically(spark.range(size), str(out), mode="overwrite")
    finally:
        stop.set()
        watcher.join()
    assert not missing, f"the output was missing {len(missing)} times during overwrites"
    assert _ids(spark, out) == list(range(8)) and _leftovers(tmp_path) == []
    (tmp_path / "a").rmdir()
    (tmp_path / "b").rmdir()

