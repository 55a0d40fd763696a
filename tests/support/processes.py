"""Ending a subprocess a test started: SIGTERM, then SIGKILL if it has not exited in time."""

from __future__ import annotations

import subprocess
from typing import Any


def terminate(proc: subprocess.Popen[Any], timeout: float = 10) -> int:
    """Stop ``proc`` (nothing to do if it has exited) and reap it; its exit status."""
    proc.terminate()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
