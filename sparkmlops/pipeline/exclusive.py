"""One pipeline at a time per tracking store and registered model (per store and experiment for pipelines
that register nothing) on this machine.

Two pipelines started together with the same command would both plan before either has finished a step,
so both would train, and both would register a version. The second one instead waits, before planning,
for an exclusive lock the first holds until its last step ends; it then plans against the first one's
finished runs and reuses them. The lock is an OS file lock (``flock``): the kernel releases it when the
holder exits, however it exits, so a crashed pipeline never leaves a stale lock. Within one process the
lock is re-entrant (a plan that never ran cannot block the next). The lock's file (empty, in the temp
folder) is kept: removing it while another process waits on it would let a third one in. It does not
span machines: two machines sharing a tracking server are not serialised.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import IO

_HELD: dict[str, list] = {}  # lock path -> [open file, holders in this process]


@dataclass
class Lease:
    path: str
    released: bool = False

    def __del__(self) -> None:  # a plan dropped without running gives its lease back
        self.release()

    def release(self) -> None:
        """Give the lock back (once); the file is closed, and the lock freed, when no holder is left."""
        if self.released:
            return
        self.released = True
        held = _HELD[self.path]
        held[1] -= 1
        if held[1] == 0:
            del _HELD[self.path]
            held[0].close()


def lock_path(tracking_uri: str, experiment_id: str, register_as: str) -> str:
    """The lock's file for this scope: a registered model is the store's (whatever the experiment); a
    relative sqlite path is made absolute so that two spellings of one store share the lock."""
    if tracking_uri.startswith("sqlite:///") and not tracking_uri.startswith("sqlite:////"):
        tracking_uri = "sqlite:///" + os.path.abspath(tracking_uri[len("sqlite:///") :])
    scope = f"{tracking_uri}\0model\0{register_as}" if register_as else f"{tracking_uri}\0experiment\0{experiment_id}"
    return os.path.join(
        tempfile.gettempdir(), f"sparkmlops-pipeline-{hashlib.sha256(scope.encode()).hexdigest()[:16]}.lock"
    )


def hold(tracking_uri: str, experiment_id: str, register_as: str) -> Lease:
    """Take the lock for this scope, waiting (with one line on stderr) while another process holds it."""
    path = lock_path(tracking_uri, experiment_id, register_as)
    if path in _HELD:
        _HELD[path][1] += 1
        return Lease(path)
    handle: IO = open(path, "a+")  # noqa: SIM115 (held past here, closed by Lease.release)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(
            f"pipeline: waiting for another pipeline on this {f'model, {register_as}' if register_as else 'experiment'}"
            ", to finish",
            file=sys.stderr,
            flush=True,
        )
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except BaseException:
            handle.close()
            raise
    _HELD[path] = [handle, 1]
    return Lease(path)
