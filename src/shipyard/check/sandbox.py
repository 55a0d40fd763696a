"""Where the dynamic checks run: host folders standing for ``/opt/ml``, containers started
through the project's :class:`~shipyard.runtimes.base.Runtime`, and plain HTTP probes.

Everything a check run makes is labelled (``org.shipyard.check=<run id>`` plus the caller's
labels) and removed by :meth:`Sandbox.close`, whatever happened.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from shipyard.contract.labels import CHECK_LABEL
from shipyard.errors import ShipyardError
from shipyard.runtimes.base import ContainerSpec, ContainerState, Mount, Runtime

__all__ = ["CHECK_LABEL", "Container", "Reply", "Sandbox", "http_request"]

LOCALHOST = "127.0.0.1"
#: Log lines quoted in a failure's detail.
LOG_TAIL_LINES = 6
_LOG_LINE_MAX = 300


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, or ``status == 0`` and ``error`` when there was none."""

    status: int
    body: bytes = b""
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def describe(self) -> str:
        if self.status == 0:
            return f"no answer ({self.error})"
        text = self.body[:200].decode("utf-8", "replace").strip()
        return f"HTTP {self.status}" + (f" {text!r}" if text else "")


def http_request(port: int, method: str, path: str, *, body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 2.0) -> Reply:
    """One request on a fresh connection to ``127.0.0.1:port``; never raises for I/O."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, data, seconds=time.monotonic() - started)
    except (OSError, http.client.HTTPException) as exc:
        return Reply(0, error=f"{type(exc).__name__}: {exc}".rstrip(": "),
                     seconds=time.monotonic() - started)
    finally:
        conn.close()


class Container:
    """One started container of the check run."""

    def __init__(self, runtime: Runtime, name: str) -> None:
        self.runtime = runtime
        self.name = name
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def state(self) -> ContainerState | None:
        return self.runtime.inspect(self.name)

    def exited(self) -> ContainerState | None:
        """The final state if the container has stopped, else ``None``."""
        state = self.state()
        return state if state is not None and not state.running else None

    def wait(self, timeout: float) -> ContainerState | None:
        return self.runtime.wait(self.name, max(timeout, 0.01))

    def signal(self, signum: int) -> None:
        self.runtime.signal(self.name, signum)

    def host_port(self, container_port: int) -> int | None:
        state = self.state()
        return None if state is None else state.ports.get(container_port)

    def first_output_at(self) -> float | None:
        """When the container first wrote to stdout or stderr (epoch seconds, as the engine
        stamped the line, so a slow poll does not shift it); ``None`` before that."""
        lines = iter(self.runtime.logs(self.name))
        try:
            first = next(lines, None)
        except ShipyardError:
            return None
        finally:
            close = getattr(lines, "close", None)
            if close is not None:
                close()
        return None if first is None else first.timestamp_ns / 1e9

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = [line.text[:_LOG_LINE_MAX] for line in self.runtime.logs(self.name)]
        except ShipyardError:
            return ""
        return "\n".join(text[-lines:])

    def ended(self, state: ContainerState, *, logs: bool = True) -> str:
        """How it ended, for a detail: exit code, OOM, engine error, last log lines."""
        text = f"exit code {state.exit_code}"
        if state.oom_killed:
            text += " (killed for memory)"
        if state.error:
            text += f"; engine: {state.error}"
        tail = self.log_tail() if logs else ""
        return text + (f"; last log lines:\n{tail}" if tail else "")


class Sandbox:
    """Host folders and containers of one check run of one image."""

    def __init__(self, runtime: Runtime, image: str, *, labels: dict[str, str] | None = None,
                 work_dir: Path | None = None) -> None:
        self.runtime = runtime
        self.image = image
        self.run_id = uuid.uuid4().hex[:10]
        self.labels = {CHECK_LABEL: self.run_id, **(labels or {})}
        self.root = Path(tempfile.mkdtemp(prefix=f"shipyard-check-{self.run_id}-",
                                          dir=str(work_dir) if work_dir else None))
        self._names: list[str] = []
        self._lock = threading.Lock()

    def folder(self, *parts: str) -> Path:
        """A new world-writable host folder (the image may run as any user)."""
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        current = path
        while current != self.root:
            os.chmod(current, 0o777)
            current = current.parent
        return path

    def start(self, purpose: str, *, command: list[str] | None = None,
              entrypoint: list[str] | None = None, env: dict[str, str] | None = None,
              mounts: list[Mount] | None = None, ports: list[int] | None = None,
              hostname: str | None = None) -> Container:
        name = f"shipyard-check-{self.run_id}-{purpose}"
        spec = ContainerSpec(
            name=name, image=self.image, command=command, entrypoint=entrypoint,
            env=dict(env or {}), mounts=list(mounts or []), labels=dict(self.labels),
            hostname=hostname, ports={p: 0 for p in ports or []},
        )
        with self._lock:
            self._names.append(name)
        self.runtime.start(spec)
        return Container(self.runtime, name)

    def close(self) -> None:
        with self._lock:
            names, self._names = self._names, []
        for name in names:
            with contextlib.suppress(ShipyardError):
                self.runtime.remove(name)
        # Files the container's user made may not be removable by an unprivileged caller.
        shutil.rmtree(self.root, ignore_errors=True)
