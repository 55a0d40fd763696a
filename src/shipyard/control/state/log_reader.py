"""Reading one host's stored log by byte offset: forward from a line boundary, backward
from one, and where the complete lines end.

The file format is :mod:`shipyard.control.state.logs`'s (``<epoch ns>\\t<text>\\n``). Offsets are
line boundaries, so a reader (the CloudWatch Logs API's tokens) resumes exactly where it
stopped. A trailing line without its newline is still being written and is never returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Line:
    #: Byte offsets of the line's start and of the next line's.
    start: int
    end: int
    timestamp_ms: int
    message: str
    #: Bytes of the message as stored (what CloudWatch sizes an event by).
    size: int


def _parse(raw: bytes, start: int) -> Line:
    stamp, _, text = raw.partition(b"\t")
    ns = int(stamp) if stamp.isdigit() else 0
    return Line(start, start + len(raw) + 1, ns // 1_000_000, text.decode("utf-8", "replace"),
                len(text))


class Forward:
    """Complete lines from byte ``offset`` on; ``pos`` is where the next unread line starts.

    The file is opened per chunk, not held while lines are consumed: a reader of many
    streams keeps one of these per stream alive at once, and thousands of open files would
    exhaust the process's descriptors.
    """

    def __init__(self, path: Path, offset: int, chunk: int = _CHUNK) -> None:
        self._path = path
        self.pos = offset
        self._chunk = chunk

    def __iter__(self) -> Iterator[Line]:
        buf = b""
        read_at = self.pos
        while True:
            try:
                with open(self._path, "rb") as fh:
                    fh.seek(read_at)
                    data = fh.read(self._chunk)
            except FileNotFoundError:
                return
            if not data:
                return
            read_at += len(data)
            *lines, buf = (buf + data).split(b"\n")
            for raw in lines:
                line = _parse(raw, self.pos)
                self.pos = line.end
                yield line


@dataclass(frozen=True)
class HostLog:
    """One host's log of one job or endpoint."""

    host: str
    path: Path

    def forward(self, offset: int, chunk: int = _CHUNK) -> Forward:
        return Forward(self.path, offset, chunk)

    def backward(self, end: int) -> Iterator[Line]:
        """Complete lines ending at or before ``end`` (a line boundary), newest first."""
        with open(self.path, "rb") as fh:
            stop, carry = end, b""
            while stop > 0:
                start = max(0, stop - _CHUNK)
                fh.seek(start)
                block = fh.read(stop - start) + carry
                first = 0
                if start > 0:
                    # The block's first line may begin in the chunk before: carry it there.
                    first = block.find(b"\n") + 1
                    carry = block[:first]
                lines = []
                pos = start + first
                for raw in block[first:].split(b"\n")[:-1]:
                    line = _parse(raw, pos)
                    pos = line.end
                    lines.append(line)
                yield from reversed(lines)
                stop = start

    def end(self) -> int:
        """The offset just past the last complete line (0 for a missing file)."""
        try:
            with open(self.path, "rb") as fh:
                stop = fh.seek(0, 2)
                while stop > 0:
                    start = max(0, stop - _CHUNK)
                    fh.seek(start)
                    block = fh.read(stop - start)
                    newline = block.rfind(b"\n")
                    if newline >= 0:
                        return start + newline + 1
                    stop = start
        except FileNotFoundError:
            pass
        return 0

    def at_boundary(self, offset: int, end: int) -> bool:
        """Whether ``offset`` starts a line (or is the end) within the first ``end`` bytes."""
        if offset == 0 or offset == end:
            return offset <= end
        if offset > end:
            return False
        with open(self.path, "rb") as fh:
            fh.seek(offset - 1)
            return fh.read(1) == b"\n"

    def modified_ns(self) -> int | None:
        """When a line was last stored, or None if there is no file (yet)."""
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
