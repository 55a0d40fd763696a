"""The local Docker engine as a :class:`~shipyard.runtimes.base.Runtime`.

SageMaker runs each host of a job as one container: ``docker run`` of the image with the job's
entry point, ``/opt/ml`` populated, a private network where hosts resolve each other as
``algo-1``, ``algo-2``... and, to stop it, SIGTERM then SIGKILL after the grace period. This
adapter reproduces that on the local engine, and is the one place where Docker SDK (and
``requests``) exceptions become ``shipyard.errors`` (see :func:`translate_errors`).

Rules kept here: containers are never privileged and never get the Docker socket; they run
with ``no-new-privileges``, a pids limit and a reduced capability set (:class:`Confinement`);
they are not auto-removed (the exit code and ``OOMKilled`` are read after exit); memory swap
equals memory so an over-limit job is OOM-killed (exit 137, ``OOMKilled``) as on SageMaker
instead of swapping; published ports bind 127.0.0.1 only.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import stat
import struct
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from shipyard.contract.labels import CAPABILITIES_LABEL, MANAGED_LABEL
from shipyard.errors import (
    ImageNotFound,
    ResourceInUse,
    ResourceNotFound,
    RuntimeUnavailable,
    ShipyardError,
    ValidationError,
)
from shipyard.runtimes.base import (
    Capacity,
    Confinement,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    LogLine,
    Runtime,
)

if TYPE_CHECKING:
    import docker

__all__ = ["DockerRuntime", "check_reference", "parse_docker_time", "parse_log_stream",
           "stats_from"]

_ZERO_TIME = "0001-01-01T00:00:00Z"
_TS_RE = re.compile(rb"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z ")
_SOCKET_PATHS = ("/var/run/docker.sock", "/run/docker.sock")
_FRAME_LENGTH = struct.Struct(">L")
_READ_BYTES = 1 << 16


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
    seconds: dict[bytes, int] = {}
    for chunk in chunks:
        if carry:
            if _TS_RE.match(carry):
                # The previous record ended without a newline: a stamp here opens its
                # continuation.
                match = _TS_RE.match(chunk)
                if match is not None:
                    chunk = chunk[match.end() :]
            chunk = carry + chunk
        *lines, carry = chunk.split(b"\n")
        for raw in lines:
            line = _record(raw, since_ns, seconds)
            if line is not None:
                yield line
    if carry:
        line = _record(carry, since_ns, seconds)
        if line is not None:
            yield line


def _record(raw: bytes, since_ns: int, seconds: dict[bytes, int]) -> LogLine | None:
    """One record as a line; ``None`` for what is not a record (an engine notice has no time
    to resume from) or what is not after ``since_ns``.

    A chatty job prints many lines a second, all with the same date and time of day: those are
    parsed once (``seconds``, keyed by ``YYYY-MM-DDTHH:MM:SS``) and only the fraction per line.
    """
    space = raw.find(b" ", 19, 32)
    if space < 0 or raw[space - 1] != 0x5A:  # "Z"
        return None
    head = raw[:19]
    base = seconds.get(head)
    if base is None:
        if _TS_RE.match(raw) is None:
            return None
        base = _parse_ts_ns(raw[:19] + b"Z ")
        if base is None:
            return None
        if len(seconds) > 64:
            seconds.clear()
        seconds[head] = base
    if space == 20:
        ts = base
    else:
        fraction = raw[20 : space - 1]
        if raw[19] != 0x2E or not fraction.isdigit() or len(fraction) > 9:  # "."
            return None
        ts = base + int(fraction.ljust(9, b"0"))
    if ts <= since_ns:
        return None
    return LogLine(timestamp_ns=ts, text=raw[space + 1 :].decode("utf-8", "replace").rstrip("\r"))


def _body_blocks(response: Any) -> Callable[[], bytes]:
    """A reader of the response body in blocks of whatever has arrived (``b""`` at its end).

    The engine sends every record as its own HTTP chunk; read through urllib3 and http.client
    that costs several calls per record (~8 us), more than parsing the record itself, and a
    follower falls behind a job printing 100k lines/s. So when the body is chunked and nothing
    of it has been read yet, the chunked framing is undone here over the connection's buffered
    reader, a block at a time; otherwise urllib3 reads it.
    """
    raw = getattr(response.raw, "_fp", None)
    fp = getattr(raw, "fp", None)
    if (getattr(raw, "chunked", False) and getattr(raw, "chunk_left", 0) is None
            and fp is not None and hasattr(fp, "read1")):
        return _Dechunker(fp.read1).read
    return lambda: response.raw.read1(_READ_BYTES)


class _Dechunker:
    """HTTP/1.1 chunked transfer coding undone over a ``read1``, many chunks per call."""

    def __init__(self, read1: Callable[[int], bytes]) -> None:
        self._read1 = read1
        self._buffer = b""
        #: Bytes of the current chunk's data still to come; -1: its closing CRLF is next.
        self._left = 0
        self._done = False

    def read(self) -> bytes:
        parts: list[bytes] = []
        while not parts and not self._done:
            data = self._read1(_READ_BYTES)
            if not data:
                return b""
            buffer = self._buffer + data if self._buffer else data
            left, pos, end = self._left, 0, len(buffer)
            while pos < end:
                if left > 0:
                    take = min(left, end - pos)
                    parts.append(buffer[pos : pos + take])
                    pos, left = pos + take, left - take
                    if left:
                        break
                    left = -1
                if left < 0:
                    if end - pos < 2:
                        break
                    pos, left = pos + 2, 0
                line_end = buffer.find(b"\r\n", pos)
                if line_end < 0:
                    break
                size = int(buffer[pos:line_end].split(b";", 1)[0], 16)
                pos = line_end + 2
                if size == 0:  # the last chunk; its trailers are not needed
                    self._done = True
                    break
                left = size
            self._buffer, self._left = buffer[pos:], left
        return b"".join(parts)


def _frames(read: Callable[[], bytes]) -> Iterator[bytes]:
    """The payloads of a multiplexed (non-TTY) attach/logs stream: 8-byte headers (stream,
    3 zero bytes, big-endian length) each followed by one record.

    Read in blocks of whatever the engine has sent: docker-py's own reader makes two small
    reads per record, which caps a follower at ~80k lines/s, below what one job can print.
    """
    buffer = b""
    while True:
        data = read()
        if not data:
            return
        buffer = buffer + data if buffer else data
        end, pos = len(buffer), 0
        while end - pos >= 8:
            (length,) = _FRAME_LENGTH.unpack_from(buffer, pos + 4)
            stop = pos + 8 + length
            if stop > end:
                break
            yield buffer[pos + 8 : stop]
            pos = stop
        buffer = buffer[pos:]


# Docker's reference grammar (distribution/reference): [domain[:port]/]path[:tag][@digest],
# path components lowercase. Checked before the engine sees a name, so `x;id` or `$(id)` is
# the caller's error, not an engine failure.
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
# A first component is a registry only with a dot or a port, or as localhost (as Docker reads
# it); otherwise it is part of the lowercase path.
_DOMAIN = (rf"(?:localhost|{_LABEL}(?:\.{_LABEL})+|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
           rf"|{_LABEL}:[0-9]+")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE_RE = re.compile(
    rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")
_IMAGE_ID_RE = re.compile(r"(?:sha256:)?[0-9a-f]{64}")


def check_reference(image: str) -> None:
    """Raise ``ValidationError`` unless ``image`` is a Docker image reference or image id."""
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    if (len(image) <= 512 and len(name) <= 255
            and (_REFERENCE_RE.fullmatch(image) or _IMAGE_ID_RE.fullmatch(image))):
        return
    raise ValidationError(
        f"Image {image[:100]!r} is not a valid image reference: expected "
        "[registry[:port]/]name[:tag][@digest], the name in lowercase letters, digits and "
        "the separators . _ - /")


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
        self, client: docker.DockerClient | None = None, *, labels: dict[str, str] | None = None,
        confinement: Confinement | None = None,
    ) -> None:
        self._owns_client = client is None
        if client is None:
            with translate_errors():
                import docker

                client = docker.from_env(timeout=120)
        self._client = client
        self._api = client.api
        self._labels = dict(labels or {})
        self._confinement = confinement or Confinement()
        self._capacity: Capacity | None = None

    def ping(self) -> None:
        """Raise ``RuntimeUnavailable`` unless the engine answers."""
        with translate_errors():
            self._api.ping()

    def capacity(self) -> Capacity:
        """What the engine reports (``docker info``: ``NCPU``, ``MemTotal``), which on Docker
        Desktop is its virtual machine's, not the host's; asked once. No GPUs: containers are
        started without device requests, so a GPU type runs on CPU here."""
        if self._capacity is None:
            with translate_errors():
                info = self._api.info()
            self._capacity = Capacity(float(info.get("NCPU") or 0),
                                      int(info.get("MemTotal") or 0), 0)
        return self._capacity

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def check_reference(self, image: str) -> None:
        check_reference(image)

    def check_image(self, image: str) -> None:
        check_reference(image)
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
        check_reference(spec.image)
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

            image_labels = (api.inspect_image(spec.image).get("Config") or {}).get("Labels")
            capabilities = self._confinement.capabilities_for(
                spec.image, (image_labels or {}).get(CAPABILITIES_LABEL, ""))
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
                security_opt=["no-new-privileges"],
                cap_drop=["ALL"],
                cap_add=capabilities,
                pids_limit=self._confinement.pids_limit,
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

    def stats(self, name: str) -> ContainerStats | None:
        """The engine's stats, one shot (``stream=False``, no second sample waited for).
        Memory in use is as ``docker stats`` shows it: usage less inactive page cache."""
        try:
            with translate_errors(name=name):
                raw = self._api.stats(name, stream=False, one_shot=True)
        except ResourceNotFound:
            return None
        return stats_from(raw)

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
        last = since_ns
        for line in self._logs(name, since_ns, follow):
            last = line.timestamp_ns
            yield line
        if follow:
            # Under load the engine was seen ending a follow stream before it had delivered
            # all an exited container printed (a 50,000-line job's log cut at 23,808 lines):
            # what is left is read once, without following.
            yield from self._logs(name, last, False)

    def _logs(self, name: str, since_ns: int, follow: bool) -> Iterator[LogLine]:
        api = self._api
        with translate_errors(name=name):
            # docker-py's logs() hides the response behind a reader that is too slow for a
            # chatty job (see _frames), so the request is made here and read in blocks.
            response = api._get(
                api._url("/containers/{0}/logs", name),
                params={
                    "stdout": 1, "stderr": 1, "timestamps": 1, "follow": int(follow),
                    "tail": "all",
                    # Whole seconds only, so nothing at the boundary is lost; exact filter
                    # below.
                    "since": int(since_ns // 1_000_000_000),
                },
                stream=True,
            )
            api._raise_for_status(response)
            if follow:
                # A quiet job may print nothing for longer than the client's timeout.
                api._disable_socket_timeout(api._get_raw_response_socket(response))
        try:
            with translate_errors(name=name):
                # Shipyard never gives a container a TTY, so the stream is always multiplexed.
                yield from parse_log_stream(
                    _frames(_body_blocks(response)), since_ns)
        finally:
            response.close()

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


def stats_from(raw: dict[str, Any]) -> ContainerStats | None:
    """An engine's one-shot stats as a sample; ``None`` when it does not run."""
    cpu = (raw.get("cpu_stats") or {}).get("cpu_usage", {}).get("total_usage")
    memory = raw.get("memory_stats") or {}
    if cpu is None or "usage" not in memory:
        return None
    extra = memory.get("stats") or {}
    cache = extra.get("inactive_file", extra.get("total_inactive_file", 0))
    return ContainerStats(cpu_seconds=cpu / 1e9,
                          memory_bytes=max(0, int(memory["usage"]) - int(cache)),
                          memory_limit_bytes=int(memory.get("limit") or 0))


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
