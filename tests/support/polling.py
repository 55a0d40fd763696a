"""Waiting for a condition by polling it (never by sleeping a fixed time)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

WAIT_S = 60.0
#: The statuses a SageMaker job ends in.
FINAL = ("Completed", "Failed", "Stopped")


def until(what: str, check: Callable[[], Any], timeout: float = WAIT_S,
          poll: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def until_final(describe: Callable[[], dict[str, Any]], field: str, timeout: float = WAIT_S,
                poll: float = 0.25) -> dict[str, Any]:
    """DescribeXJob polled as a client does: the first answer whose ``field`` is final."""
    def done() -> dict[str, Any] | None:
        record = describe()
        return record if record[field] in FINAL else None
    return dict(until(f"{field} final", done, timeout, poll))
