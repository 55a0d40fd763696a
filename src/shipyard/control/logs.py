"""Job logs, stored per job and per host, readable while the job runs.

One append-only file per host: ``<data_dir>/logs/<kind>/<job>/<host>.log``, a line per record
as ``<epoch ns>\\t<text>``. The runtime's timestamps are kept, so a supervisor that resumes
after a restart continues after the last stored line instead of repeating it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from shipyard.runtimes.base import LogLine


@dataclass(frozen=True)
class LogEvent:
    host: str
    timestamp_ns: int
    message: str

    @property
    def timestamp_ms(self) -> int:
        return self.timestamp_ns // 1_000_000


class LogWriter:
    def __init__(self, fh: TextIO) -> None:
        self._fh = fh

    def write(self, line: LogLine) -> None:
        # Flushed per line so readers (log tailing, failure reasons) see it at once.
        self._fh.write(f"{line.timestamp_ns}\t{line.text.replace(chr(10), ' ')}\n")
        self._fh.flush()


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
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(data)

    @contextlib.contextmanager
    def open_append(self, kind: str, name: str, host: str) -> Iterator[LogWriter]:
        """A writer kept open while a container's log is followed (one open, many lines)."""
        path = self.path(kind, name, host)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            yield LogWriter(fh)

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
                    tail = fh.read(size - start).split(b"\n")
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
