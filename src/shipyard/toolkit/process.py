"""Run the user's process: own process group, signals forwarded, stderr teed into a tail.

Rules implemented:
- StopTrainingJob and MaxRuntimeInSeconds are ``docker stop -t 120``: SIGTERM to PID 1 (this
  toolkit), SIGKILL 120 s later (AWS "Use Your Own Training Algorithms"). AWS's toolkit
  forwards nothing, so a script never learns it is being stopped (sagemaker-training-toolkit
  #125, #173). Here SIGTERM and SIGINT are forwarded to the child's whole process group, the
  toolkit keeps waiting, and the exit status is the child's (128 + signal number when a signal
  killed it, as a shell reports it).
- The child runs in its own session, so a grandchild (data loader workers, ``torchrun``
  ranks) gets the signal too, and a terminal's Ctrl-C reaches the child only through us.
- stdout is inherited untouched; stderr goes through a pipe and is copied chunk by chunk to our
  stderr as it arrives (no line buffering, so ``\\r`` progress bars still show), while the last
  lines are kept for the failure file (AWS's capture mode buffered whole streams, #37, PR #127).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import IO

from shipyard.errors import EntryPointError

FORWARDED_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
DEFAULT_TAIL_LINES = 20
_TAIL_BYTES = 64 * 1024
_CHUNK = 64 * 1024
# After the child exits, how long to wait for the rest of its stderr. A grandchild that
# outlives it may hold the pipe open forever, so the wait is bounded.
_DRAIN_SECONDS = 5.0


class StderrTail:
    """The last lines of a byte stream, in bounded memory (at most ~64 KiB kept)."""

    def __init__(self, max_lines: int = DEFAULT_TAIL_LINES, max_bytes: int = _TAIL_BYTES) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._lock = threading.Lock()

    def feed(self, chunk: bytes) -> None:
        with self._lock:
            self._buffer += chunk
            excess = len(self._buffer) - self.max_bytes
            if excess > 0:
                del self._buffer[:excess]

    def lines(self) -> list[str]:
        """The last ``max_lines`` non-empty lines, decoded leniently; ``\\r`` splits lines."""
        with self._lock:
            text = bytes(self._buffer).decode("utf-8", errors="replace")
        lines = [line.rstrip() for line in text.replace("\r", "\n").split("\n")]
        return [line for line in lines if line.strip()][-self.max_lines :]


@dataclass(frozen=True)
class ChildResult:
    """How the child ended."""

    returncode: int
    """Shell convention: the exit code, or 128 + N when signal N killed the child."""
    stderr_tail: tuple[str, ...]
    forwarded_signals: tuple[int, ...] = ()


def shell_status(returncode: int) -> int:
    """``Popen.returncode`` (-N for signal N) -> the status a shell reports (128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


class _Forwarder:
    """Signal handler that relays to the child's process group once it exists."""

    def __init__(self) -> None:
        self.pgid: int | None = None
        self.pending: list[int] = []
        self.forwarded: list[int] = []

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.pgid is None:
            # Arrived while the child was being started: replay it right after.
            self.pending.append(signum)
            return
        self._send(signum)

    def attach(self, pgid: int) -> None:
        self.pgid = pgid
        while self.pending:
            self._send(self.pending.pop(0))

    def _send(self, signum: int) -> None:
        assert self.pgid is not None
        # os.write, not logging: a signal handler must not take the logging lock.
        name = signal.Signals(signum).name
        _write_all(2, f"shipyard-train: forwarding {name} to process group {self.pgid}\n".encode())
        try:
            os.killpg(self.pgid, signum)
            self.forwarded.append(signum)
        except (ProcessLookupError, PermissionError):
            pass  # the group is already gone


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError:
            return  # our stderr is gone; keep draining the child regardless
        view = view[written:]


def _pump(stream: IO[bytes], tail: StderrTail, sink_fd: int) -> None:
    fd = stream.fileno()
    try:
        while True:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            _write_all(sink_fd, chunk)
            tail.feed(chunk)
    except OSError:
        pass
    finally:
        stream.close()


def _install(forwarder: _Forwarder) -> dict[signal.Signals, object]:
    # Handlers can only be set from the main thread; elsewhere (embedding) nothing is forwarded.
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, forwarder.handle) for sig in FORWARDED_SIGNALS}


def _restore(previous: Mapping[signal.Signals, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


def run_child(
    command: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str],
    tail_lines: int = DEFAULT_TAIL_LINES,
    stderr_fd: int = 2,
) -> ChildResult:
    """Run ``command`` to completion in a new session and return its status and stderr tail.

    Raises ``EntryPointError`` when the command cannot be started at all.
    """
    tail = StderrTail(tail_lines)
    forwarder = _Forwarder()
    previous = _install(forwarder)
    try:
        try:
            proc = subprocess.Popen(
                list(command),
                cwd=cwd,
                env=dict(env),
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise EntryPointError(f"cannot start {command[0]}: {exc}") from exc
        forwarder.attach(proc.pid)
        assert proc.stderr is not None
        reader = threading.Thread(
            target=_pump, args=(proc.stderr, tail, stderr_fd), name="stderr-tee", daemon=True
        )
        reader.start()
        returncode = proc.wait()
        reader.join(timeout=_DRAIN_SECONDS)
    finally:
        _restore(previous)
    return ChildResult(
        returncode=shell_status(returncode),
        stderr_tail=tuple(tail.lines()),
        forwarded_signals=tuple(forwarder.forwarded),
    )
