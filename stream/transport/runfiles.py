"""Run-owned files: the rings in ``shm_dir()`` and the ipc folder in the temp dir,
named after their owner so a later run can collect what a killed one left."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

# Named stream-RUNID-PID.NS-…: PID is the supervisor that owns them and NS its pid
# namespace (the inode of /proc/self/ns/pid), so a later run can tell a file whose
# owner is gone (SIGKILL gave it no chance to clean up) from one of a live run. A
# '.' never occurs in a source id, so names of another form are never mistaken for these.
_OWNED = re.compile(r"^stream-[0-9a-f]{8}-(\d+)\.(\d+)-")


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def run_prefix(run_id: str) -> str:
    """'stream-RUNID-PID.NS-': the start of every file and folder this process owns for a run."""
    return f"stream-{run_id}-{os.getpid()}.{_pid_namespace()}-"


def _owner_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def remove_stale_run_files(*directories: Path) -> list[Path]:
    """Remove the rings and ipc folders in ``directories`` whose owning supervisor is
    gone; returns what was removed. Only names of the run-owned form (``run_prefix``)
    of a process in our pid namespace are considered; a live owner's files, and any
    file named otherwise, are left alone."""
    ns = _pid_namespace()
    removed: list[Path] = []
    for d in directories:
        try:
            entries = list(d.iterdir())
        except OSError:
            continue
        for path in entries:
            m = _OWNED.match(path.name)
            if m is None or int(m.group(2)) != ns or int(m.group(1)) == os.getpid():
                continue
            if not _owner_gone(int(m.group(1))):
                continue
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except FileNotFoundError:
                continue  # another starting run removed it first
            except OSError:
                continue  # not ours to remove (another user's)
            removed.append(path)
    return removed
