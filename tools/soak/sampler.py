"""Resident memory and open file descriptors of a set of processes, sampled on a thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    seconds: float
    """Since the sampler started."""
    rss_mib: dict[str, float]
    fds: dict[str, int]


@dataclass
class ResourceSampler:
    """Samples ``pids`` (name -> pid) every ``every_s`` until the block ends."""

    pids: dict[str, int]
    every_s: float
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ResourceSampler:
        processes = {name: psutil.Process(pid) for name, pid in self.pids.items()}
        started = time.monotonic()

        def loop() -> None:
            while True:
                self.samples.append(sample(processes, time.monotonic() - started))
                if self._stop.wait(self.every_s):
                    return

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def sample(processes: dict[str, psutil.Process], seconds: float) -> Sample:
    rss: dict[str, float] = {}
    fds: dict[str, int] = {}
    for name, process in processes.items():
        # A process that died has no figures: the verdict then says so.
        try:
            with process.oneshot():
                rss[name] = process.memory_info().rss / MIB
                fds[name] = process.num_fds()
        except psutil.Error:
            continue
    return Sample(seconds, rss, fds)
