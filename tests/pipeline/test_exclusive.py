"""One pipeline at a time per store and registered model: a second process waits, a holder that dies, even
by SIGKILL, leaves no lock behind, and within one process the lock is re-entrant. No Spark: the lock is
taken before planning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from conftest import PROJECT_ROOT

from sparkmlops.pipeline import exclusive

HOLD_IN_A_PROCESS = (
    "import sys, time; from sparkmlops.pipeline import exclusive; "
    "lease = exclusive.hold(*sys.argv[1:4]); print('held', flush=True); time.sleep(60)"
)


def _holder(*scope: str) -> subprocess.Popen:
    """Another process holding the lock of ``scope``, as a running pipeline does."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_IN_A_PROCESS, *scope], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _hold_in_thread(*scope: str) -> threading.Event:
    acquired = threading.Event()

    def take():
        exclusive.hold(*scope).release()
        acquired.set()

    threading.Thread(target=take, daemon=True).start()
    return acquired


def test_a_second_pipeline_waits_for_the_first_and_a_killed_one_leaves_no_lock(tmp_path, capsys):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    first = _holder(store, "1", "exclusive_price")
    try:
        same_model = _hold_in_thread(store, "2", "exclusive_price")  # another experiment: the same registry
        other_model = _hold_in_thread(store, "1", "another_price")
        assert other_model.wait(timeout=10), "another model waited"
        assert not same_model.wait(timeout=1.0), "the same model did not wait"
        os.kill(first.pid, signal.SIGKILL)  # however the holder ends, the kernel releases its lock
        assert same_model.wait(timeout=10)
    finally:
        _stop(first)
    assert "waiting for another pipeline on this model, exclusive_price, to finish" in capsys.readouterr().err


def test_within_one_process_the_lock_is_reentrant(tmp_path):
    scope = (f"sqlite:///{tmp_path}/mlflow.db", "1", "")
    outer = exclusive.hold(*scope)
    inner = exclusive.hold(*scope)  # a plan made and dropped, then the pipeline: no deadlock
    inner.release()
    other_process = subprocess.Popen(
        [sys.executable, "-c", HOLD_IN_A_PROCESS, *scope], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(2.0)
        assert other_process.poll() is None and not _ready(other_process), "the lock was let go too early"
        outer.release()
        assert other_process.stdout.readline().strip() == "held"
    finally:
        _stop(other_process)


def _ready(process: subprocess.Popen) -> bool:
    import select

    return bool(select.select([process.stdout], [], [], 0)[0])
