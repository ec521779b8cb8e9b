"""`make cluster-down` (``python -m tools.local_cluster down``) signals a recorded PID only while it is still
the daemon `up` started: after a reboot or a crash the PID may belong to any process, which is left alone,
reported and dropped from the state. No Spark: the "daemons" are processes the tests start themselves,
and every one is killed by its PID at teardown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT

from tools import local_cluster, processes

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


@pytest.fixture
def start_process():
    """Start a process (argv); every one started is killed by its PID and reaped at teardown."""
    started: list[subprocess.Popen] = []

    def start(*argv: str) -> subprocess.Popen:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def _pretend_daemon(start_process, main_class: str) -> subprocess.Popen:
    """A process whose command line names ``main_class`` (an extra argv word), as a daemon's java does."""
    return start_process(sys.executable, "-c", "import time; time.sleep(60)", main_class)


def _down(state_dir: Path) -> subprocess.CompletedProcess:
    """What `make cluster-down` runs."""
    return subprocess.run(
        [sys.executable, "-m", "tools.local_cluster", "down", "--state-dir", str(state_dir)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _recorded_pids(state_dir: Path) -> dict:
    return json.loads((state_dir / local_cluster.STATE_FILE).read_text())["pids"]


def test_down_leaves_alone_a_pid_of_an_old_state_file_now_used_by_another_process(tmp_path, start_process):
    """An old cluster.json (no start times or classes recorded) still loads; its PIDs are checked by
    command line."""
    other = start_process("sleep", "60")
    (tmp_path / local_cluster.STATE_FILE).write_text(
        json.dumps({"state_dir": str(tmp_path), "pids": {"master": other.pid}, "log_offsets": {"master": 0}})
    )

    result = _down(tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"not stopped: master (pid {other.pid} is now another process: sleep 60)" in result.stdout
    assert other.poll() is None, "down signalled a process that is not the cluster's"
    assert _recorded_pids(tmp_path) == {}


@pytest.mark.parametrize(
    "reused_by", ["another command, started at the recorded time", "the daemon's class, started at another time"]
)
def test_down_leaves_alone_a_pid_another_process_now_has(tmp_path, start_process, reused_by):
    """Neither the start time alone nor the class in the command line is enough: another cluster's master
    reusing the PID has the class, a process that inherited the recorded start has another command."""
    if reused_by.startswith("another command"):
        other, name, main_class = start_process("sleep", "60"), "worker-1", WORKER_CLASS
    else:
        other, name, main_class = _pretend_daemon(start_process, MASTER_CLASS), "master", MASTER_CLASS
    cluster = local_cluster.Cluster(state_dir=str(tmp_path))
    local_cluster.record_daemon(cluster, name, other.pid, main_class)  # its start time is recorded
    if not reused_by.startswith("another command"):
        cluster.start_times[name] = "1"  # what it was when `up` recorded it: another process
        cluster.save()

    result = _down(tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"not stopped: {name} (pid {other.pid} is now another process: " in result.stdout
    assert other.poll() is None, "down signalled a process that is not the cluster's"
    assert _recorded_pids(tmp_path) == {}


def test_down_stops_a_recorded_daemon(tmp_path, start_process):
    daemon = _pretend_daemon(start_process, MASTER_CLASS)
    cluster = local_cluster.Cluster(state_dir=str(tmp_path))
    local_cluster.record_daemon(cluster, "master", daemon.pid, MASTER_CLASS)

    result = _down(tmp_path)

    assert result.returncode == 0, result.stderr
    assert "stopped master" in result.stdout and "not stopped" not in result.stdout
    assert daemon.wait(timeout=10) == -signal.SIGTERM
    assert _recorded_pids(tmp_path) == {}


def test_without_proc_the_start_time_and_command_come_from_ps(tmp_path, start_process, monkeypatch):
    """macOS has no /proc: ``ps -o lstart= -o command=`` identifies the process instead."""
    monkeypatch.setattr(processes, "_HAS_PROC", False)
    daemon = _pretend_daemon(start_process, MASTER_CLASS)
    other = start_process("sleep", "60")
    cluster = local_cluster.Cluster(state_dir=str(tmp_path))
    local_cluster.record_daemon(cluster, "master", daemon.pid, MASTER_CLASS)
    local_cluster.record_daemon(cluster, "worker-1", other.pid, WORKER_CLASS)
    assert cluster.start_times["master"] and cluster.start_times["worker-1"]  # ps's lstart

    assert local_cluster.stop(cluster, timeout=10) == ["master"]

    assert daemon.poll() is not None  # stop() reaped its own child: its exit status is gone
    assert other.poll() is None
    assert local_cluster.Cluster.load(str(tmp_path)).pids == {}
