"""The local Docker engine as a :class:`~shipyard.runtimes.base.Runtime`.

SageMaker runs each host of a job as one container: ``docker run`` of the image with the job's
entry point, ``/opt/ml`` populated, a private network where hosts resolve each other as
``algo-1``, ``algo-2``... and, to stop it, SIGTERM then SIGKILL after the grace period. This
adapter reproduces that on the local engine, and is the one place where Docker SDK (and
``requests``) exceptions become ``shipyard.errors`` (see :func:`translate_errors`).

Rules kept here: containers are never privileged and never get the Docker socket; they are not
auto-removed (the exit code and ``OOMKilled`` are read after exit); memory swap equals memory so
an over-limit job is OOM-killed (exit 137, ``OOMKilled``) as on SageMaker instead of swapping;
published ports bind 127.0.0.1 only.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import stat
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from shipyard.errors import (
    ImageNotFound,
    ResourceInUse,
    ResourceNotFound,
    RuntimeUnavailable,
    ShipyardError,
    ValidationError,
)
from shipyard.runtimes.base import MANAGED_LABEL, ContainerSpec, ContainerState, LogLine, Runtime

if TYPE_CHECKING:
    import docker

__all__ = ["DockerRuntime", "parse_docker_time", "parse_log_stream"]

_ZERO_TIME = "0001-01-01T00:00:00Z"
_TS_RE = re.compile(rb"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z ")
_SOCKET_PATHS = ("/var/run/docker.sock", "/run/docker.sock")


@contextlib.contextmanager
def translate_errors(*, image: str | None = None, name: str | None = None) -> Iterator[None]:
    """Turn Docker SDK and transport errors into Shipyard errors, most specific first (the
    one boundary for every module that talks to the engine)."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except ShipyardError:
        raise
    except docker.errors.ImageNotFound as exc:
        what = image or name or "image"
        raise ImageNotFound(
            f"image {what} is not in the local Docker engine: build or load it first"
        ) from exc
    except docker.errors.NotFound as exc:
        raise ResourceNotFound(f"no such container or network: {name or exc.explanation}") from exc
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            raise ResourceInUse(f"{name or 'resource'} is in use: {exc.explanation}") from exc
        raise RuntimeUnavailable(f"the Docker engine refused: {exc.explanation or exc}") from exc
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise RuntimeUnavailable(
            f"cannot reach the Docker engine ({exc}); is dockerd running and is DOCKER_HOST "
            "(or /var/run/docker.sock) reachable?"
        ) from exc


def _is_read_timeout(exc: BaseException) -> bool:
    """The unix-socket adapter reports a read timeout as ConnectionError(ReadTimeoutError)."""
    import requests.exceptions
    import urllib3.exceptions

    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    return isinstance(exc, requests.exceptions.ConnectionError) and any(
        isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args
    )


def parse_docker_time(value: str | None) -> float | None:
    """Docker's RFC 3339 (nanosecond) time as epoch seconds; ``None`` for its zero time."""
    if not value or value.startswith(_ZERO_TIME[:4]):
        return None
    ns = _parse_ts_ns(value.encode() + b" ")
    return None if ns is None else ns / 1e9


def _parse_ts_ns(prefix: bytes) -> int | None:
    match = _TS_RE.match(prefix)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = (match.group(7) or b"").ljust(9, b"0")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return seconds * 1_000_000_000 + int(fraction)


def parse_log_stream(chunks: Iterator[bytes], since_ns: int = 0) -> Iterator[LogLine]:
    """Lines of a ``timestamps=True`` log stream, whatever the chunking.

    Each record starts with an RFC3339Nano timestamp and a space. Docker splits lines over 16 KiB
    into partial records, each with its own timestamp and without a trailing newline; the
    continuation's timestamp is dropped so the line comes back whole, stamped with its first part.
    """
    carry = b""
    for chunk in chunks:
        if carry and _TS_RE.match(carry):
            # The previous record ended without a newline: a stamp here opens its continuation.
            match = _TS_RE.match(chunk)
            if match is not None:
                chunk = chunk[match.end() :]
        carry += chunk
        *lines, carry = carry.split(b"\n")
        for raw in lines:
            yield from _emit(raw, since_ns)
    if carry:
        yield from _emit(carry, since_ns)


def _emit(raw: bytes, since_ns: int) -> Iterator[LogLine]:
    match = _TS_RE.match(raw)
    if match is None:
        return  # not a record (an engine notice): it has no time to resume from
    ts = _parse_ts_ns(raw)
    if ts is not None and ts > since_ns:
        text = raw[match.end() :].decode("utf-8", errors="replace").rstrip("\r")
        yield LogLine(timestamp_ns=ts, text=text)


def _check_mount_source(source: str) -> None:
    # Handing the engine's socket to a job gives it root on the host: refuse it outright.
    real = os.path.realpath(source)
    try:
        is_socket = stat.S_ISSOCK(os.stat(real).st_mode)
    except OSError:
        is_socket = False
    if is_socket or real in _SOCKET_PATHS:
        raise ValidationError(f"mounting a socket ({source}) into a container is not allowed")


class DockerRuntime(Runtime):
    """Containers on the local Docker engine (the reference runtime)."""

    kind = "docker"

    def __init__(
        self, client: docker.DockerClient | None = None, *, labels: dict[str, str] | None = None
    ) -> None:
        self._owns_client = client is None
        if client is None:
            with translate_errors():
                import docker

                client = docker.from_env(timeout=120)
        self._client = client
        self._api = client.api
        self._labels = dict(labels or {})

    def ping(self) -> None:
        """Raise ``RuntimeUnavailable`` unless the engine answers."""
        with translate_errors():
            self._api.ping()

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def check_image(self, image: str) -> None:
        with translate_errors(image=image):
            self._api.inspect_image(image)

    def create_network(self, name: str, labels: dict[str, str], *,
                       internal: bool = False) -> None:
        if self._find_network(name) is not None:
            return
        all_labels = {MANAGED_LABEL: "true", **self._labels, **labels}
        with contextlib.suppress(ResourceInUse), translate_errors(name=name):
            # Internal only under network isolation: otherwise jobs may reach S3-like
            # endpoints, as on SageMaker.
            self._api.create_network(
                name, driver="bridge", internal=internal, labels=all_labels,
                check_duplicate=True,
            )

    def remove_network(self, name: str) -> None:
        network = self._find_network(name)
        if network is None:
            return
        if (network.get("Labels") or {}).get(MANAGED_LABEL) != "true":
            raise ResourceInUse(f"network {name} was not created by Shipyard; not removing it")
        with contextlib.suppress(ResourceNotFound), translate_errors(name=name):
            self._api.remove_network(network["Id"])

    def _find_network(self, name: str) -> dict[str, Any] | None:
        with translate_errors(name=name):
            # The name filter matches substrings; keep the exact match only.
            found = self._api.networks(names=[name])
        return next((n for n in found if n.get("Name") == name), None)

    def start(self, spec: ContainerSpec) -> None:
        """Create and start. A process that cannot even be executed (bad entry point) is not an
        exception: like ``docker run`` it leaves an exited container with code 126/127 and the
        engine's error text, which :meth:`inspect` reports."""
        for mount in spec.mounts:
            _check_mount_source(mount.source)
        api = self._api
        labels = {MANAGED_LABEL: "true", **self._labels, **spec.labels}
        network_mode = spec.network or None
        networking_config = None
        if spec.network and spec.network != "none":
            networking_config = api.create_networking_config(
                {spec.network: api.create_endpoint_config(aliases=spec.network_aliases or None)}
            )
        with translate_errors(image=spec.image, name=spec.name):
            import docker.types

            host_config = api.create_host_config(
                mounts=[
                    docker.types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
                    for m in spec.mounts
                ],
                network_mode=network_mode,
                nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
                mem_limit=spec.memory_bytes,
                memswap_limit=spec.memory_bytes,
                port_bindings={p: ("127.0.0.1", h or None) for p, h in spec.ports.items()} or None,
                privileged=False,
                init=False,
                auto_remove=False,
            )
            api.create_container(
                spec.image,
                name=spec.name,
                command=spec.command,
                entrypoint=spec.entrypoint,
                environment=[f"{k}={v}" for k, v in spec.env.items()],
                hostname=spec.hostname,
                labels=labels,
                ports=list(spec.ports) or None,
                host_config=host_config,
                networking_config=networking_config,
                detach=True,
            )
        try:
            with translate_errors(image=spec.image, name=spec.name):
                api.start(spec.name)
        except RuntimeUnavailable:
            state = self.inspect(spec.name)
            if state is None or not state.error:
                raise

    def inspect(self, name: str) -> ContainerState | None:
        try:
            with translate_errors(name=name):
                info = self._api.inspect_container(name)
        except ResourceNotFound:
            return None
        return _state_from(name, info)

    def wait(self, name: str, timeout: float) -> ContainerState | None:
        deadline = time.monotonic() + timeout
        try:
            with translate_errors(name=name):
                self._api.wait(name, timeout=max(timeout, 0.01))
        except RuntimeUnavailable as exc:
            if exc.__cause__ is None or not _is_read_timeout(exc.__cause__):
                raise
        state = self.inspect(name)
        if state is None:
            raise ResourceNotFound(f"no such container: {name}")
        if state.running:
            # The wait API may return early on engine hiccups; never block past the deadline.
            remaining = deadline - time.monotonic()
            return self.wait(name, remaining) if remaining > 0.05 else None
        return state

    def logs(self, name: str, since_ns: int = 0, follow: bool = False) -> Iterator[LogLine]:
        with translate_errors(name=name):
            stream = self._api.logs(
                name,
                stdout=True,
                stderr=True,
                stream=True,
                timestamps=True,
                follow=follow,
                # Whole seconds only, so nothing at the boundary is lost; exact filter below.
                since=int(since_ns // 1_000_000_000) or None,
            )
        try:
            with translate_errors(name=name):
                yield from parse_log_stream(iter(stream), since_ns)
        finally:
            stream.close()

    def signal(self, name: str, signum: int) -> None:
        state = self.inspect(name)
        if state is None or not state.running:
            return
        try:
            with translate_errors(name=name):
                self._api.kill(name, signal=int(signum))
        except (ResourceInUse, RuntimeUnavailable):
            # It exited between the inspect and the kill (the engine says "is not running").
            state = self.inspect(name)
            if state is not None and state.running:
                raise

    def remove(self, name: str) -> None:
        try:
            with translate_errors(name=name):
                info = self._api.inspect_container(name)
        except ResourceNotFound:
            return
        if (info.get("Config", {}).get("Labels") or {}).get(MANAGED_LABEL) != "true":
            raise ResourceInUse(f"container {name} was not created by Shipyard; not removing it")
        # 404: already gone; 409: removal already in progress. Both mean done.
        with contextlib.suppress(ResourceNotFound, ResourceInUse), translate_errors(name=name):
            self._api.remove_container(name, force=True, v=True)

    def list(self, labels: dict[str, str]) -> list[str]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with translate_errors():
            found = self._api.containers(all=True, filters=filters)
        return sorted(n.lstrip("/") for c in found for n in c.get("Names", [])[:1])


def _state_from(name: str, info: dict[str, Any]) -> ContainerState:
    state = info.get("State") or {}
    running = bool(state.get("Running"))
    ports: dict[int, int] = {}
    for key, bindings in ((info.get("NetworkSettings") or {}).get("Ports") or {}).items():
        for binding in bindings or []:
            if binding.get("HostPort"):
                ports[int(key.split("/")[0])] = int(binding["HostPort"])
                break
    networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
    address = next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")), "")
    return ContainerState(
        name=name,
        running=running,
        exit_code=None if running else int(state.get("ExitCode", 0)),
        oom_killed=bool(state.get("OOMKilled")),
        started_at=parse_docker_time(state.get("StartedAt")),
        finished_at=None if running else parse_docker_time(state.get("FinishedAt")),
        error=state.get("Error") or "",
        ports=ports,
        address=address if running else "",
    )
