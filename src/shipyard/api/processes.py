"""What the server and the data plane share as processes: which process a record names, an
event loop to run on, and records written whole."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

__all__ = ["process_start", "run_loop", "still_runs", "terminate", "write_json"]


def process_start(pid: int) -> int | None:
    """Clock ticks since boot at which ``pid`` started; None when it does not run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after the last ")".
    fields = stat.rsplit(")", 1)[-1].split()
    if fields[:1] in (["Z"], ["X"]):
        return None  # exited, only not yet reaped by its parent
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def still_runs(pid: int, started: int | None) -> bool:
    """The process recorded as (``pid``, ``started``) runs: pids are reused, start times
    are not."""
    now = process_start(pid)
    return now is not None and (started is None or now == started)


def terminate(pid: int, started: int | None, timeout: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; True when it stopped on SIGTERM."""
    if not still_runs(pid, started):
        return True
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not still_runs(pid, started):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return False


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` whole: readers see the old record or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on uvloop when it is installed (about a quarter less CPU per request).

    Python 3.10 lacks ``asyncio.Runner``; there the stock loop serves (uvloop's global policy
    would also change the loop of everything else in the process).
    """
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    if factory is None or sys.version_info < (3, 11):
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)
