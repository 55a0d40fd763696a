"""Jobs' instance utilization, sampled from the runtime while the job runs.

As SageMaker publishes it for training and processing jobs (developer guide, "SageMaker AI
job and endpoint instance metrics"): in the job kind's namespace
(``/aws/sagemaker/TrainingJobs``, ``/aws/sagemaker/ProcessingJobs``...), dimension
``Host`` = ``<job>/algo-<N>``, unit ``Percent``:

- ``CPUUtilization``: 100 per core (a host using two cores fully: 200), from the change of
  the container's CPU time between two samples;
- ``MemoryUtilization``: memory in use over the memory the container may use;
- ``DiskUtilization``: used space of the file system holding the job's data folder;
- ``GPUUtilization``, ``GPUMemoryUtilization``: only when the runtime reports a GPU.

One thread per job (:class:`UtilizationSampler`) asks the runtime every
:data:`SAMPLE_SECONDS` and writes each round's points in one transaction; it stops with the
job, or by itself once no host runs any more.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from shipyard.control.metrics.ingest import Point
from shipyard.control.metrics.model import MetricKey
from shipyard.control.metrics.platform import point
from shipyard.control.metrics.published import PublishedStore
from shipyard.errors import ShipyardError
from shipyard.runtimes.base import ContainerStats, Runtime

__all__ = ["SAMPLE_SECONDS", "UtilizationSampler"]

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 2.0
PERCENT = "Percent"


Dimensions = tuple[tuple[str, str], ...]


class UtilizationSampler:
    """Samples ``hosts`` (host name -> container) of job ``job`` into ``namespace``;
    ``hosts`` may be a function, asked each round (an endpoint's instances come and go),
    and ``dimensions`` says each host's (default: ``Host`` = ``<job>/<host>``)."""

    def __init__(self, runtime: Runtime, store: Callable[[], PublishedStore], namespace: str,
                 job: str, hosts: dict[str, str] | Callable[[], dict[str, str]], disk: Path, *,
                 every: float = SAMPLE_SECONDS, clock: Callable[[], float] = time.time,
                 dimensions: Callable[[str], Dimensions] | None = None,
                 keep_running: bool = False) -> None:
        self.runtime = runtime
        self.namespace = namespace
        self.job = job
        self._hosts = hosts if callable(hosts) else dict(hosts)
        self.disk = disk
        self.every = every
        self._open = store
        self._clock = clock
        self._dimensions = dimensions or (lambda host: (("Host", f"{self.job}/{host}"),))
        #: Go on sampling when no host runs (until :meth:`stop`), rather than end.
        self.keep_running = keep_running
        #: Per host: the last sample's (time, CPU seconds).
        self._last: dict[str, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"utilization-{self.job}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        store: PublishedStore | None = None
        try:
            while True:
                try:
                    found, running = self.sample()
                    if found:
                        store = store or self._open()
                        store.put(found)
                except ShipyardError as exc:
                    log.warning("utilization of %s: %s", self.job, exc)
                    running = True
                if (not running and not self.keep_running) or self._stop.wait(self.every):
                    return
        finally:
            if store is not None:
                store.close()

    def sample(self) -> tuple[list[Point], bool]:
        """One round: its points, and whether any host still runs."""
        found: list[Point] = []
        running = False
        disk = _disk_percent(self.disk)
        hosts = self._hosts() if callable(self._hosts) else self._hosts
        for gone in set(self._last) - set(hosts):
            del self._last[gone]
        for host, container in hosts.items():
            stats = self.runtime.stats(container)
            if stats is None:
                continue
            running = True
            found.extend(self._points(host, stats, disk))
        return found, running

    def _points(self, host: str, stats: ContainerStats, disk: float | None) -> list[Point]:
        now = self._clock()
        ms = int(now * 1000)
        dims = self._dimensions(host)

        def percent(name: str, value: float) -> Point:
            return point(MetricKey(self.namespace, name, dims), ms, PERCENT, max(0.0, value))

        found = []
        last = self._last.get(host)
        self._last[host] = (now, stats.cpu_seconds)
        if last is not None and now > last[0]:
            found.append(percent("CPUUtilization",
                                 100.0 * (stats.cpu_seconds - last[1]) / (now - last[0])))
        if stats.memory_limit_bytes > 0:
            found.append(percent("MemoryUtilization",
                                 100.0 * stats.memory_bytes / stats.memory_limit_bytes))
        if disk is not None:
            found.append(percent("DiskUtilization", disk))
        if stats.gpu_percent is not None:
            found.append(percent("GPUUtilization", stats.gpu_percent))
        if stats.gpu_memory_percent is not None:
            found.append(percent("GPUMemoryUtilization", stats.gpu_memory_percent))
        return found


def _disk_percent(path: Path) -> float | None:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return 100.0 * usage.used / usage.total if usage.total else None
