"""Which process a PID is now: its start time and command line, and whether it runs. For tools that stop
processes they recorded (tools/local_cluster.py): a PID can belong to another process by the time it is
read back, so a recorded PID is signalled only while it is still what was recorded.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_HAS_PROC = Path("/proc/self/stat").exists()


def _ps(pid: int, *fields: str) -> str:
    """``ps``'s ``fields`` of ``pid``, where there is no /proc; '' when ps cannot tell."""
    try:
        # -ww: the whole command line, not one cut at the terminal's width
        result = subprocess.run(
            ["ps", "-ww", *(arg for f in fields for arg in ("-o", f)), "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def identity(pid: int) -> tuple[str | None, str] | None:
    """(start time, command line) of process ``pid``; None if it cannot be read (gone, or hidden). The
    start time is field 22 of /proc/<pid>/stat (clock ticks after boot); without /proc, ps's lstart, or
    None where ps lacks it: the command line alone then identifies the process."""
    if _HAS_PROC:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        # The command name (field 2) may hold spaces and parentheses: count fields after its last ")".
        return stat.rsplit(")", 1)[1].split()[19], b" ".join(argv).decode(errors="replace").strip()
    line = _ps(pid, "lstart=", "command=")
    if len(line.split()) > 5:
        parts = line.split(None, 5)  # lstart is five words: "Mon Jan  1 12:00:00 2024"
        return " ".join(parts[:5]), parts[5]
    command = _ps(pid, "command=")
    return (None, command) if command else None


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        pass
    # A child of this process that exited stays a zombie until reaped: reap it.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True
