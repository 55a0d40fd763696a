"""Job logs, stored per job and per host, readable while the job runs.

One append-only file per host: ``<data_dir>/logs/<kind>/<job>/<host>.log``, a line per record
as ``<epoch ns>\\t<text>``. The runtime's timestamps are kept, so a supervisor that resumes
after a restart continues after the last stored line instead of repeating it.

A follower's lines are buffered and written whole, a batch at a time (every
:data:`FLUSH_SECONDS`, when :data:`FLUSH_CHARS` are waiting, and at the end): a job printing a
million lines would otherwise cost a million writes and fall behind it. A reader sees a line
within ``FLUSH_SECONDS`` and never half of one (:meth:`LogStore.read` stops at the last newline).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from shipyard.control.state.log_reader import HostLog
from shipyard.runtimes.base import LogLine

log = logging.getLogger(__name__)

#: Longest a followed line waits in the writer's buffer before readers can see it.
FLUSH_SECONDS = 0.1
#: Buffered characters that are written at once, without waiting for the timer.
FLUSH_CHARS = 1 << 20
#: A follower that is still running but has stored nothing new for this long is given up on
#: when its job ends (its stream is stuck); one that is still storing lines is always awaited.
STALL_SECONDS = 60.0


@dataclass(frozen=True)
class LogEvent:
    host: str
    timestamp_ns: int
    message: str

    @property
    def timestamp_ms(self) -> int:
        return self.timestamp_ns // 1_000_000


class LogWriter:
    """Appends lines to one open log file, in batches of whole lines; see the module doc."""

    def __init__(self, fh: BinaryIO, flush_seconds: float = FLUSH_SECONDS,
                 flush_chars: int = FLUSH_CHARS) -> None:
        self._fh = fh
        self._flush_chars = flush_chars
        self._pending: list[str] = []
        self._chars = 0
        # Held across the file write too: the timer and the follower must not interleave.
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._timer = threading.Thread(target=self._flush_every, args=(flush_seconds,),
                                       name="log-flush", daemon=True)
        self._timer.start()

    def write(self, line: LogLine) -> None:
        record = f"{line.timestamp_ns}\t{line.text.replace(chr(10), ' ')}\n"
        with self._lock:
            self._pending.append(record)
            self._chars += len(record)
            if self._chars >= self._flush_chars:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        """Write what is buffered and stop the timer; the file is complete when this returns."""
        self._closed.set()
        self._timer.join()
        self.flush()

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        data = "".join(self._pending).encode("utf-8", "replace")
        self._pending, self._chars = [], 0
        self._fh.write(data)
        self._fh.flush()

    def _flush_every(self, seconds: float) -> None:
        while not self._closed.wait(seconds):
            try:
                self.flush()
            except OSError as exc:
                # The follower's own write (or close) reports it; keep trying meanwhile.
                log.warning("cannot write log %s: %s", getattr(self._fh, "name", "?"), exc)


def await_followers(store: LogStore, kind: str, name: str,
                    followers: Mapping[str, threading.Thread],
                    stall_seconds: float = STALL_SECONDS) -> None:
    """Block until each host's follower has stored its container's log to the end.

    There is no time limit while lines keep arriving: a job's final status must not be
    written before its log is complete (SDK clients stop reading the log at that status).
    A follower that stores nothing for ``stall_seconds`` is abandoned with a warning.
    """
    for host, thread in followers.items():
        path = store.path(kind, name, host)
        size, changed = -1, time.monotonic()
        while thread.is_alive():
            thread.join(0.25)
            now_size = _size(path)
            if now_size != size:
                size, changed = now_size, time.monotonic()
            elif thread.is_alive() and time.monotonic() - changed > stall_seconds:
                log.warning("log of %s job %s/%s: nothing new for %.0f s, not waiting for "
                            "the rest", kind, name, host, stall_seconds)
                break


def _drop_unfinished_line(path: Path) -> None:
    """Cut an unfinished last line (a writer killed mid-write) so that the next line is not
    glued to it; :meth:`LogStore.last_timestamp_ns` ignores it, so the line is fetched again."""
    try:
        with open(path, "rb+") as fh:
            size = end = fh.seek(0, os.SEEK_END)
            while end > 0:
                start = max(0, end - 65536)
                fh.seek(start)
                newline = fh.read(end - start).rfind(b"\n")
                if newline >= 0:
                    end = start + newline + 1
                    break
                end = start
            if end < size:
                fh.truncate(end)
    except FileNotFoundError:
        return


def _private(path: str, flags: int) -> int:
    # Logs hold what jobs print, secrets included: readable by the server's user only.
    return os.open(path, flags, 0o600)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


class LogStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, kind: str, name: str) -> Path:
        return self.root / kind / name

    def path(self, kind: str, name: str, host: str) -> Path:
        return self._dir(kind, name) / f"{host}.log"

    def append(self, kind: str, name: str, host: str, lines: Iterable[LogLine]) -> None:
        path = self.path(kind, name, host)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(
            f"{line.timestamp_ns}\t{line.text.replace(chr(10), ' ')}\n" for line in lines
        )
        if data:
            with open(path, "a", encoding="utf-8", opener=_private) as fh:
                fh.write(data)

    @contextlib.contextmanager
    def open_append(self, kind: str, name: str, host: str) -> Iterator[LogWriter]:
        """A writer kept open while a container's log is followed (one open, many lines)."""
        path = self.path(kind, name, host)
        path.parent.mkdir(parents=True, exist_ok=True)
        _drop_unfinished_line(path)
        with open(path, "ab", opener=_private) as fh:
            writer = LogWriter(fh)
            try:
                yield writer
            finally:
                writer.close()

    def host_log(self, kind: str, name: str, host: str) -> HostLog:
        return HostLog(host, self.path(kind, name, host))

    def hosts(self, kind: str, name: str) -> list[str]:
        folder = self._dir(kind, name)
        if not folder.is_dir():
            return []
        # Endpoint streams are "<variant>/<instance>", kept as a folder per variant.
        return sorted(str(p.relative_to(folder))[:-len(".log")] for p in folder.rglob("*.log"))

    def last_timestamp_ns(self, kind: str, name: str, host: str) -> int:
        path = self.path(kind, name, host)
        try:
            with open(path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                window = 65536
                while True:
                    start = max(0, size - window)
                    fh.seek(start)
                    # Only \n ends a record: \r (progress bars) is part of a message.
                    # The piece after the last newline is unfinished (a writer killed mid-write):
                    # its line is fetched again, so it does not count.
                    tail = fh.read(size - start).split(b"\n")[:-1]
                    if start > 0:
                        tail = tail[1:]  # may begin mid-line, even mid-timestamp
                    for raw in reversed(tail):
                        stamp, sep, _ = raw.partition(b"\t")
                        if sep and stamp.isdigit():
                            return int(stamp)
                    if start == 0:
                        return 0
                    window *= 4  # one line longer than the window: look further back
        except FileNotFoundError:
            return 0

    def read(self, kind: str, name: str, host: str, offset: int = 0
             ) -> tuple[list[LogEvent], int]:
        """Complete lines from byte ``offset``; returns them and the offset to continue from."""
        path = self.path(kind, name, host)
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        events: list[LogEvent] = []
        # Only \n ends a record: \r (progress bars) is part of a message.
        for raw in data[:end].split(b"\n")[:-1]:
            stamp, sep, text = raw.partition(b"\t")
            if not (sep and stamp.isdigit()):
                # Not written by us (edited by hand, a torn write): keep it, in order.
                stamp, text = b"", raw
            when = int(stamp) if stamp else (events[-1].timestamp_ns if events else 0)
            events.append(LogEvent(host, when, text.decode("utf-8", "replace")))
        return events, offset + end

    def tail_text(self, kind: str, name: str, host: str, lines: int = 20) -> list[str]:
        events, _ = self.read(kind, name, host)
        return [e.message for e in events[-lines:]]
