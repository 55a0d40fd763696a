"""``<data_dir>/builds.json``: what ``shipyard build`` built and pushed, newest last.

One JSON document ``{"version": 1, "entries": [...]}``; each entry is a ``build`` (tag, image
id, content hash, base, recipe) or a ``push`` (reference, digest, image id, the digest a forced
push replaced), with a UTC ``at`` timestamp. Writers take an exclusive ``flock`` and replace the
file atomically, so concurrent builds never lose an entry or leave half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from shipyard.errors import StorageError

__all__ = ["RECORDS_FILE", "append_record", "read_records"]

RECORDS_FILE = "builds.json"
_VERSION = 1


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_records(data_dir: Path) -> list[dict[str, Any]]:
    """Every entry, oldest first ([] when nothing was recorded yet)."""
    path = data_dir / RECORDS_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    entries = document.get("entries") if isinstance(document, dict) else None
    return list(entries) if isinstance(entries, list) else []


def append_record(data_dir: Path, event: str, fields: Mapping[str, object]) -> dict[str, Any]:
    """Add one ``event`` entry (``build`` or ``push``) and return it."""
    path = data_dir / RECORDS_FILE
    entry = {"event": event, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             **fields}
    try:
        with _locked(path):
            entries = read_records(data_dir)
            entries.append(entry)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"version": _VERSION, "entries": entries}, indent=1),
                           encoding="utf-8")
            os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot record the {event} in {path}: {exc}") from exc
    return entry
