"""One launcher per work directory: an exclusive lock held for the stack's lifetime.

A second stack on the same directory would rebuild the repository, the backends
and the signing files the first is serving from, and append to its logs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "launcher.lock"


class WorkDirBusy(RuntimeError):
    """Another running launcher holds the work directory."""


class WorkDirLock:
    """``flock`` on ``<work_dir>/launcher.lock`` with the holder's pid written inside.

    The kernel drops the lock when the holder exits, however it exits, so a
    stale file never blocks; the pid is only there to name the holder.
    """

    def __init__(self, work_dir: Path) -> None:
        self.path = work_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Takes the lock at once or raises WorkDirBusy naming the holder."""
        if self.held:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise WorkDirBusy(self._busy_message(holder)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _busy_message(self, holder: str) -> str:
        who = f"another launcher (pid {holder})" if holder else "another launcher"
        return (
            f"{self.path.parent} is in use by {who}, whose stack serves from it: stop "
            "that one first, or give a second stack its own GENMEDIA_WORK_DIR"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        # Emptied while still held, so no reader names a pid that has let go.
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock
        self._fd = None
