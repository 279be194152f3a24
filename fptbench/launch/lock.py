"""Folder locks that die with their process, and process identities that survive PID reuse.

A sweep holds ``results/<experiment>/sweep.lock`` for its whole run, and each cell holds
``<run id>/cell.lock`` while it runs: ``flock`` on the file, held as long as the file descriptor
is open, so the kernel releases it whatever ends the process (SIGKILL, OOM, a crash); a stale
lock file is harmless. The file says who holds it (pid, host, since, command), for the message of
whoever finds it taken. [ours] ``flock`` and not ``fcntl`` record locks: those are per process and
dropped when any descriptor of the file is closed, and a lock file does not need byte ranges.

A local cell's job id is a PID; PIDs are reused. :func:`process_start` reads the start time of a
PID from ``/proc`` so that a record of ``(pid, start)`` names one process, not whoever has the PID
now.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

from fptbench.errors import UsageError

__all__ = ["LockHeld", "FolderLock", "lock_holder", "is_locked", "process_start", "process_alive",
           "SWEEP_LOCK", "CELL_LOCK"]

SWEEP_LOCK = "sweep.lock"
CELL_LOCK = "cell.lock"
_RETRY_S = 2.0  # a non-blocking acquire retries this long: a status check holds a lock for microseconds


class LockHeld(UsageError):
    """The folder is locked by another process (the message says which); the CLI exits 2."""


def process_start(pid: int | str) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot, ``/proc/PID/stat`` field 22), or
    None when no such process runs (or it is a zombie: it has ended)."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
    except (OSError, ValueError, IndexError):
        return None
    if not fields or fields[0] == "Z":
        return None
    try:
        return int(fields[19])  # field 22 of the line; fields[0] is field 3
    except (IndexError, ValueError):
        return None


def process_alive(pid: int | str, start: int | None) -> bool:
    """Whether the process recorded as ``(pid, start)`` still runs (``start`` None: the PID alone,
    for records written before start times were kept)."""
    now = process_start(pid)
    return now is not None and (start is None or now == start)


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process (it has not said who yet)"
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')} "
            f"({holder.get('command', '?')})")


def lock_holder(path: Path) -> dict[str, Any] | None:
    """What the lock file says of its holder (pid, host, since, command), or None."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_locked(path: Path) -> bool:
    """Whether some process holds the lock file ``path`` now (False if it does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # closing drops the shared lock, if taken
    return False


class FolderLock:
    """An exclusive lock on ``folder`` (the file ``folder/name``), as a context manager.

    Args:
        what: what the holder does, for the message of whoever finds the lock taken
            (default: this process's command line).
    """

    def __init__(self, folder: str | os.PathLike, name: str, *, what: str | None = None):
        self.path = Path(folder) / name
        self.what = what or " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, wait: bool = False, hint: str = "") -> "FolderLock":
        """Take the lock; with ``wait``, block until its holder ends or lets go.

        Raises:
            LockHeld: (``wait`` False) another process holds it: the message names it, then ``hint``.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            deadline = time.monotonic() + _RETRY_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                    break
                except OSError as err:
                    if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    if time.monotonic() >= deadline:
                        raise LockHeld(f"{self.path.parent}: locked by {_describe(lock_holder(self.path))}"
                                       + (f"; {hint}" if hint else "")) from None
                    time.sleep(0.05)
            holder = {"pid": os.getpid(), "host": socket.gethostname(),
                      "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": self.what}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the lock; the file stays (harmless)

    def __enter__(self) -> "FolderLock":
        if not self.held:
            self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
