"""A log shown a window at a time: the newest lines, the lines before an offset, or the lines
after one (following a running job). Read by byte offset from the stored file
(``control/state/log_reader``), so a 100 MB log costs what one window costs."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from shipyard.control.state.log_reader import HostLog

__all__ = ["LogWindow", "after", "before"]

#: Lines in a window, and the most bytes of text one window holds.
WINDOW_LINES = 300
WINDOW_BYTES = 512 * 1024


@dataclass(frozen=True)
class LogWindow:
    host: str
    #: (milliseconds since the epoch, text), oldest first.
    lines: list[tuple[int, str]]
    #: Byte offsets: where the first line starts and where the last one ends.
    start: int
    end: int
    #: Where the complete lines of the file end now (``end == size``: the window is the tail).
    size: int


def before(log: HostLog, offset: int | None, lines: int = WINDOW_LINES) -> LogWindow:
    """The lines ending at ``offset`` (a line boundary; None: the end of the file)."""
    size = log.end()
    end = size if offset is None or offset > size or not log.at_boundary(offset, size) \
        else offset
    taken, total = [], 0
    for line in log.backward(end):
        taken.append(line)
        total += line.size
        if len(taken) >= lines or total >= WINDOW_BYTES:
            break
    taken.reverse()
    start = taken[0].start if taken else end
    return LogWindow(log.host, [(line.timestamp_ms, line.message) for line in taken], start,
                     end, size)


def after(log: HostLog, offset: int, lines: int = WINDOW_LINES) -> LogWindow:
    """The complete lines from ``offset`` on (at most a window of them)."""
    size = log.end()
    if offset > size or not log.at_boundary(offset, size):
        offset = size
    reader = log.forward(offset)
    taken, total = [], 0
    for line in itertools.islice(reader, lines):
        if line.end > size:
            break
        taken.append(line)
        total += line.size
        if total >= WINDOW_BYTES:
            break
    end = taken[-1].end if taken else offset
    return LogWindow(log.host, [(line.timestamp_ms, line.message) for line in taken], offset,
                     end, size)
