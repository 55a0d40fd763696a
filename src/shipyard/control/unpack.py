"""Checking and unpacking archives without the server's own CPU time.

A code or model archive is as big as its owner made it: reading a 50 MB one takes a CPU for
a fraction of a second and holds the interpreter's lock in small steps all along. Done by the
server process, twenty at once stall every invocation it answers meanwhile (issue 11's
benchmark, ``benchmarks/invoke_under_load.py``). Archives above :data:`INLINE_BYTES` are
therefore handled by a child process (``python -m shipyard.contract.archives``) at a lower
CPU priority, while the calling thread only waits; small ones stay inline, where a process
start would cost more than the work. The checks and their errors are the same either way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shipyard.contract import archives
from shipyard.errors import ShipyardError, UnsafeArchiveError

#: Archives up to this size are read in the calling thread.
INLINE_BYTES = 4 << 20


def check_archive(path: Path, dest: Path, inline_bytes: int = INLINE_BYTES) -> None:
    """:func:`shipyard.contract.archives.check_archive`, big archives in a worker."""
    if _inline(path, inline_bytes):
        archives.check_archive(path, dest)
    else:
        _run("check", path, dest)


def safe_extract(path: Path, dest: Path, inline_bytes: int = INLINE_BYTES) -> None:
    """:func:`shipyard.contract.archives.safe_extract`, big archives in a worker."""
    if _inline(path, inline_bytes):
        archives.safe_extract(path, dest)
    else:
        dest.mkdir(parents=True, exist_ok=True)
        _run("extract", path, dest)


def _inline(path: Path, inline_bytes: int) -> bool:
    try:
        return path.stat().st_size <= inline_bytes
    except OSError:
        return True  # the inline path reports it as the checks always did


def _run(operation: str, path: Path, dest: Path) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "shipyard.contract.archives", operation, str(path),
             str(dest)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            check=False, close_fds=True)
    except OSError as exc:
        raise ShipyardError(f"could not start the archive worker: {exc}") from exc
    if done.returncode == 1:
        raise UnsafeArchiveError(done.stderr.decode("utf-8", "replace").strip())
    if done.returncode != 0:
        raise ShipyardError(f"the archive worker failed ({done.returncode}) on {path}: "
                            f"{done.stderr.decode('utf-8', 'replace').strip()[-500:]}")
