"""Secrets read from mounted files: once, and again only when the file changes.

A Kubernetes Secret mounted as a file is rotated in place (the kubelet swaps
a symlink), so a process that reads its key once at start-up never sees the
new one, and one that reads it for every image pays a file read each time.
:class:`SecretFile` keeps the value and looks at the file's identity (inode,
size, modification time) at most every ``recheck_s`` seconds, re-reading it
only when that changed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

RECHECK_S = 5.0
"""Longest a rotated secret goes unnoticed."""


class SecretFile:
    """One secret file's stripped text, cached until the file changes."""

    def __init__(
        self,
        path: Path,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._recheck_s = recheck_s
        self._clock = clock
        self._lock = threading.Lock()  # images are encoded on worker threads
        self._value: str | None = None
        self._identity: tuple[int, int, int] | None = None
        self._checked_at = -float("inf")

    def read(self) -> str:
        """The secret; raises OSError only if the file has never been readable."""
        with self._lock:
            now = self._clock()
            if self._value is not None and now - self._checked_at < self._recheck_s:
                return self._value
            self._checked_at = now
            try:
                stat = os.stat(self.path)  # follows the Secret's symlink
                identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
                if self._value is None or identity != self._identity:
                    self._value = self.path.read_text().strip()
                    self._identity = identity
            except OSError as exc:
                if self._value is None:
                    raise
                # Mid-rotation the file can be briefly absent: keep the last key.
                logger.warning(
                    "cannot re-read %s (%s); keeping the key read before", self.path, exc
                )
            return self._value
