"""Endpoint invocation metrics, as SageMaker publishes them in ``AWS/SageMaker``.

SageMaker developer guide, "SageMaker AI endpoint invocation metrics": dimensions
``EndpointName`` and ``VariantName``;

- ``Invocations``: 1 per InvokeEndpoint request a variant took (Sum, SampleCount);
- ``InvocationsPerInstance``: 1/<the variant's instance count> per request (Sum);
- ``Invocation4XXErrors`` / ``Invocation5XXErrors``: 1 per request the model answered 4xx /
  5xx (or that got no answer: crash, timeout, unreachable: counted 5xx), 0 otherwise
  (Average is the error rate, Sum the errors);
- ``ModelLatency``: microseconds the model took, from the request's leaving for the
  container to its answer's arrival; ``OverheadLatency``: microseconds the router added
  around it (routing, retries, forwarding, handing the answer back).

Recording sits on InvokeEndpoint's hot path, so :meth:`InvocationMetrics.record` only
aggregates in memory, per (endpoint, variant, second): counts, and for each latency a
histogram with 64 buckets per power of two (at most 1.6 % wide), each bucket keeping its count and
exact sum, plus the exact minimum and maximum. A timer thread turns closed seconds into
high-resolution points every :data:`FLUSH_SECONDS` (one transaction), never the request.
Each latency bucket becomes one point at its values' mean, and the minimum and maximum
points of their own: SampleCount, Sum, Minimum and Maximum are exact, percentiles within a
bucket's width.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
from collections.abc import Callable

from shipyard.control.metrics.ingest import Point
from shipyard.control.metrics.model import MetricKey
from shipyard.control.metrics.platform import open_store, point
from shipyard.control.metrics.published import PublishedStore
from shipyard.errors import ShipyardError
from shipyard.settings import Settings

__all__ = ["FLUSH_SECONDS", "NAMESPACE", "NO_ANSWER", "InvocationMetrics"]

log = logging.getLogger(__name__)

NAMESPACE = "AWS/SageMaker"
#: How often aggregated seconds are written.
FLUSH_SECONDS = 2.0
#: ``record``'s status for a request that got no answer from the model.
NO_ANSWER = 0
_SUB = 128  # frexp's mantissa is in [0.5, 1): 64 buckets per power of two
_frexp = math.frexp


class _Histogram:
    __slots__ = ("buckets", "hi", "lo")

    def __init__(self) -> None:
        self.buckets: dict[int, list[float]] = {}
        self.lo = math.inf
        self.hi = -math.inf

    def points(self, key: MetricKey, ms: int) -> list[Point]:
        """Exact count, sum, minimum and maximum; each bucket at its mean."""
        if not self.buckets:
            return []
        lo, hi = self.lo, self.hi
        ordered = [self.buckets[k] for k in sorted(self.buckets)]
        found = [point(key, ms, "Microseconds", lo)]
        ordered[0] = [ordered[0][0] - 1, ordered[0][1] - lo]
        if sum(b[0] for b in ordered) >= 1:
            found.append(point(key, ms, "Microseconds", hi))
            ordered[-1] = [ordered[-1][0] - 1, ordered[-1][1] - hi]
        for count, total in ordered:
            if count >= 1:
                found.append(point(key, ms, "Microseconds", min(hi, max(lo, total / count)),
                                   count))
        return found


class _Second:
    __slots__ = ("count", "errors4", "errors5", "instances", "model", "overhead")

    def __init__(self, instances: int) -> None:
        self.count = 0
        self.errors4 = 0
        self.errors5 = 0
        self.instances = instances
        self.model = _Histogram()
        self.overhead = _Histogram()

    def points(self, endpoint: str, variant: str, second: int) -> list[Point]:
        dims = (("EndpointName", endpoint), ("VariantName", variant))
        ms = second * 1000
        n = float(self.count)
        share = 1.0 / max(1, self.instances)

        def key(name: str) -> MetricKey:
            return MetricKey(NAMESPACE, name, dims)

        def errors(name: str, found: int) -> Point:
            return Point(key(name), ms, "None", n, float(found), 0.0 if found < n else 1.0,
                         1.0 if found else 0.0, True)

        return [Point(key("Invocations"), ms, "None", n, n, 1.0, 1.0, True),
                Point(key("InvocationsPerInstance"), ms, "None", n, n * share, share, share,
                      True),
                errors("Invocation4XXErrors", self.errors4),
                errors("Invocation5XXErrors", self.errors5),
                *self.model.points(key("ModelLatency"), ms),
                *self.overhead.points(key("OverheadLatency"), ms)]


class InvocationMetrics:
    """One process's endpoint invocation metrics: :meth:`record` per request (any thread),
    written to ``metrics.db`` by a timer thread started on the first record."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time,
                 store: Callable[[], PublishedStore] | None = None) -> None:
        self._open = store or (lambda: open_store(settings))
        self._clock = clock
        self._lock = threading.Lock()
        self._seconds: dict[tuple[str, str, int], _Second] = {}
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._store: PublishedStore | None = None

    def record(self, endpoint: str, variant: str, instances: int, status: int,
               model_seconds: float, total_seconds: float) -> None:
        """One request ``variant`` of ``endpoint`` (``instances`` strong) took: the model's
        HTTP ``status`` (:data:`NO_ANSWER` if none), the seconds the model took (< 0: no
        answer) and the seconds from the router's taking it to its answer's handing back."""
        slot = (endpoint, variant, int(self._clock()))
        with self._lock:
            second = self._seconds.get(slot)
            if second is None:
                second = self._seconds[slot] = _Second(instances)
                if self._thread is None:
                    self._start()
            second.count += 1
            second.instances = instances
            if status >= 500 or status == NO_ANSWER:
                second.errors5 += 1
            elif status >= 400:
                second.errors4 += 1
            if model_seconds >= 0.0:
                # Histogram.add, inlined twice: this is InvokeEndpoint's hot path.
                for histogram, value in (
                        (second.model, model_seconds * 1e6),
                        (second.overhead, max(0.0, total_seconds - model_seconds) * 1e6)):
                    mantissa, exponent = _frexp(value)
                    bucket = histogram.buckets.get(exponent * _SUB + int(mantissa * _SUB))
                    if bucket is None:
                        histogram.buckets[exponent * _SUB + int(mantissa * _SUB)] = [1.0, value]
                    else:
                        bucket[0] += 1.0
                        bucket[1] += value
                    if value < histogram.lo:
                        histogram.lo = value
                    if value > histogram.hi:
                        histogram.hi = value

    def _start(self) -> None:
        if self._closed.is_set():
            return
        self._thread = threading.Thread(target=self._run, name="invocation-metrics",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        while not self._closed.wait(FLUSH_SECONDS):
            self.flush()
        if self._store is not None:
            self._store.close()

    def flush(self, *, everything: bool = False) -> None:
        """Write the seconds that are over (``everything``: all of them)."""
        now = int(self._clock())
        with self._lock:
            slots = [s for s in self._seconds if everything or s[2] < now]
            taken = [(s, self._seconds.pop(s)) for s in slots]
        if not taken:
            return
        found = [p for (endpoint, variant, at), second in taken
                 for p in second.points(endpoint, variant, at)]
        try:
            if self._store is None:
                self._store = self._open()
            self._store.put(found)
        except ShipyardError as exc:
            log.warning("endpoint metrics dropped (%d points): %s", len(found), exc)

    def close(self) -> None:
        """Stop the timer and write what is left (idempotent)."""
        self._closed.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            atexit.unregister(self.close)
        self.flush(everything=True)
        if self._store is not None:
            self._store.close()
