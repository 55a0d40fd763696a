"""An in-memory runtime for control-plane tests, built like httpx's ``MockTransport``.

``FakeRuntime(handler)`` calls ``handler(spec)`` once per started container; the returned
:class:`FakeBehaviour` (or a bare exit code) decides what the "container" does: its log lines,
how long it runs, its exit code, whether it honours SIGTERM (SageMaker's stop: SIGTERM, then
SIGKILL = 137 after the grace period), and whether it is OOM-killed (137 + ``OOMKilled``).
Nothing runs and no thread is started: state moves on when it is read, so tests are
deterministic; ``duration=None`` keeps a container running until it is signalled, removed or
:meth:`FakeRuntime.finish`-ed by the test.
"""

from __future__ import annotations

import dataclasses
import signal as signals
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from shipyard.contract.labels import MANAGED_LABEL
from shipyard.errors import ImageNotFound, ResourceInUse, ResourceNotFound
from shipyard.runtimes.base import (
    Capacity,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    LogLine,
    Runtime,
)

__all__ = ["FakeBehaviour", "FakeRuntime", "Handler"]

OOM_EXIT_CODE = 137


@dataclass(frozen=True)
class FakeBehaviour:
    """What one fake container does."""

    exit_code: int = 0
    logs: tuple[str, ...] = ()
    #: Seconds it runs; ``None``: until signalled, removed or finished by the test.
    duration: float | None = 0.0
    #: Exit code when it gets SIGTERM; ``None``: it ignores SIGTERM (only SIGKILL ends it).
    on_sigterm: int | None = 128 + signals.SIGTERM
    #: Ends killed for memory: exit 137 with ``oom_killed``.
    oom_killed: bool = False
    #: Engine error text (e.g. the entry point could not be executed).
    error: str = ""
    #: What :meth:`FakeRuntime.stats` reports while it runs, its ``cpu_seconds`` being per
    #: second run (1.5: one and a half cores busy); ``None``: nothing.
    stats: ContainerStats | None = None


Handler = Callable[[ContainerSpec], "FakeBehaviour | int"]


def _default_handler(spec: ContainerSpec) -> FakeBehaviour:
    return FakeBehaviour()


@dataclass
class _Container:
    spec: ContainerSpec
    behaviour: FakeBehaviour
    started_at: float
    deadline: float | None
    lines: list[LogLine]
    ports: dict[int, int]
    exit_code: int | None = None
    oom_killed: bool = False
    finished_at: float | None = None
    labels: dict[str, str] = field(default_factory=dict)


class FakeRuntime(Runtime):
    """In-memory containers whose behaviour a handler decides; thread-safe."""

    kind = "fake"

    def __init__(self, handler: Handler | None = None, *, images: Iterable[str] | None = None,
                 capacity: Capacity | None = None):
        self._handler = handler or _default_handler
        self._images = None if images is None else set(images)
        #: The machine it pretends to be; ``None``: unknown, so nothing is fitted to it.
        self._capacity = capacity
        self._containers: dict[str, _Container] = {}
        self._cond = threading.Condition()
        self._next_port = 30000
        #: Every spec started, in order; every signal delivered, as (name, signum).
        self.started: list[ContainerSpec] = []
        self.signals: list[tuple[str, int]] = []
        self.networks: dict[str, dict[str, str]] = {}
        self.internal_networks: dict[str, bool] = {}

    # -- test controls ---------------------------------------------------------------------

    def finish(self, name: str, exit_code: int = 0, *, oom_killed: bool = False) -> None:
        """End a running container now."""
        with self._cond:
            self._end(self._get(name), exit_code, oom_killed=oom_killed)

    def emit(self, name: str, text: str) -> None:
        """Append a log line to a container, stamped now."""
        with self._cond:
            self._append(self._get(name), text)
            self._cond.notify_all()

    # -- Runtime ---------------------------------------------------------------------------

    def capacity(self) -> Capacity | None:
        return self._capacity

    def check_image(self, image: str) -> None:
        if self._images is not None and image not in self._images:
            raise ImageNotFound(f"image {image} is not in the fake runtime: build or load it first")

    def create_network(self, name: str, labels: dict[str, str], *,
                       internal: bool = False) -> None:
        with self._cond:
            self.networks.setdefault(name, dict(labels))
            self.internal_networks[name] = internal

    def remove_network(self, name: str) -> None:
        with self._cond:
            self.networks.pop(name, None)

    def start(self, spec: ContainerSpec) -> None:
        self.check_image(spec.image)
        outcome = self._handler(spec)
        behaviour = outcome if isinstance(outcome, FakeBehaviour) else FakeBehaviour(int(outcome))
        with self._cond:
            if spec.name in self._containers:
                raise ResourceInUse(f"container {spec.name} already exists")
            ports = {}
            for container_port, host_port in spec.ports.items():
                if not host_port:
                    self._next_port += 1
                    host_port = self._next_port
                ports[container_port] = host_port
            now = time.monotonic()
            container = _Container(
                spec=spec,
                behaviour=behaviour,
                started_at=time.time(),
                deadline=None if behaviour.duration is None else now + behaviour.duration,
                lines=[],
                ports=ports,
                labels={MANAGED_LABEL: "true", **spec.labels},
            )
            for text in behaviour.logs:
                self._append(container, text)
            self._containers[spec.name] = container
            self.started.append(spec)
            self._cond.notify_all()

    def inspect(self, name: str) -> ContainerState | None:
        with self._cond:
            container = self._containers.get(name)
            return None if container is None else self._state(container)

    def stats(self, name: str) -> ContainerStats | None:
        with self._cond:
            container = self._containers.get(name)
            if container is None or not self._state(container).running:
                return None
            given = container.behaviour.stats
            if given is None:
                return None
            ran = time.time() - container.started_at
            return dataclasses.replace(given, cpu_seconds=given.cpu_seconds * ran)

    def wait(self, name: str, timeout: float) -> ContainerState | None:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                container = self._get(name)
                state = self._state(container)
                if not state.running:
                    return state
                now = time.monotonic()
                if now >= end:
                    return None
                until = end if container.deadline is None else min(end, container.deadline)
                self._cond.wait(max(until - now, 0.001))

    def logs(self, name: str, since_ns: int = 0, follow: bool = False) -> Iterator[LogLine]:
        with self._cond:
            self._get(name)
        cursor = since_ns
        while True:
            with self._cond:
                container = self._containers.get(name)
                if container is None:
                    return
                running = self._state(container).running
                fresh = [line for line in container.lines if line.timestamp_ns > cursor]
            yield from fresh
            if fresh:
                cursor = fresh[-1].timestamp_ns
            if not follow or not running:
                return
            with self._cond:
                deadline = container.deadline
                pause = 0.05 if deadline is None else max(deadline - time.monotonic(), 0.001)
                self._cond.wait(min(pause, 0.05))

    def signal(self, name: str, signum: int) -> None:
        with self._cond:
            container = self._containers.get(name)
            if container is None or not self._state(container).running:
                return
            self.signals.append((name, signum))
            if signum == signals.SIGKILL:
                self._end(container, 128 + signals.SIGKILL)
            elif signum == signals.SIGTERM:
                if container.behaviour.on_sigterm is not None:
                    self._end(container, container.behaviour.on_sigterm)
            else:
                # Default disposition of most signals: terminate.
                self._end(container, 128 + signum)

    def remove(self, name: str) -> None:
        with self._cond:
            self._containers.pop(name, None)
            self._cond.notify_all()

    def list(self, labels: dict[str, str]) -> list[str]:
        with self._cond:
            return sorted(
                name
                for name, container in self._containers.items()
                if labels.items() <= container.labels.items()
            )

    # -- internals (call with the lock held) -----------------------------------------------

    def _get(self, name: str) -> _Container:
        container = self._containers.get(name)
        if container is None:
            raise ResourceNotFound(f"no such container: {name}")
        return container

    def _append(self, container: _Container, text: str) -> None:
        last = container.lines[-1].timestamp_ns if container.lines else 0
        stamp = max(time.time_ns(), last + 1)
        container.lines.append(LogLine(timestamp_ns=stamp, text=text))

    def _end(self, container: _Container, exit_code: int, *, oom_killed: bool = False) -> None:
        if container.exit_code is not None:
            return
        container.exit_code = exit_code
        container.oom_killed = oom_killed
        container.finished_at = time.time()
        self._cond.notify_all()

    def _state(self, container: _Container) -> ContainerState:
        behaviour = container.behaviour
        if (
            container.exit_code is None
            and container.deadline is not None
            and time.monotonic() >= container.deadline
        ):
            oom = behaviour.oom_killed
            self._end(container, OOM_EXIT_CODE if oom else behaviour.exit_code, oom_killed=oom)
            container.finished_at = container.started_at + (behaviour.duration or 0.0)
        running = container.exit_code is None
        return ContainerState(
            name=container.spec.name,
            running=running,
            exit_code=container.exit_code,
            oom_killed=container.oom_killed,
            started_at=container.started_at,
            finished_at=container.finished_at,
            error=behaviour.error if not running else "",
            ports=dict(container.ports) if running else {},
        )
