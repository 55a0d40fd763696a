"""How much memory this container may use, and how much this process holds.

Multi-model mode needs both: the budget its LRU works against defaults to a fraction of the
container's memory limit (the cgroup's, v1 or v2, else the host's ``MemTotal``), and a model's
cost is the growth of the loading process's resident set while ``model_fn`` runs.
Linux only; elsewhere the functions answer ``None``/0 and the caller picks a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: share of the container's memory the loaded models may use by default; the rest is left to
#: the server itself, request and response buffers and what handlers allocate per request
DEFAULT_BUDGET_FRACTION = 0.7
#: cgroup v1 writes "no limit" as a page-rounded 2**63-1; anything this large means none
_UNLIMITED = 1 << 60
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None  # cgroup v2 writes "max" for no limit
    value = int(text)
    return value if value < _UNLIMITED else None


def _cgroup_limit(proc_cgroup: Path, cgroup_root: Path) -> int | None:
    """The memory limit of this process's cgroup (v2 ``memory.max``, v1 ``limit_in_bytes``).

    Inside a container the cgroup namespace makes its own cgroup the root, so the files at the
    root are the container's; outside one, the process's own cgroup path is looked up first.
    """
    v1_path = v2_path = ""
    try:
        for line in proc_cgroup.read_text().splitlines():
            hierarchy, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if hierarchy == "0" and not controllers:
                v2_path = path.lstrip("/")
            elif "memory" in controllers.split(","):
                v1_path = path.lstrip("/")
    except OSError:
        pass
    candidates = [
        cgroup_root / "memory" / v1_path / "memory.limit_in_bytes",
        cgroup_root / "memory" / "memory.limit_in_bytes",
        cgroup_root / v2_path / "memory.max",
        cgroup_root / "memory.max",
    ]
    limits = [limit for path in candidates if (limit := _read_int(path)) is not None]
    return min(limits) if limits else None


def _host_memory(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_limit(proc: Path = Path("/proc"), cgroup_root: Path = _CGROUP_ROOT) -> int | None:
    """Bytes this container may use: the smaller of its cgroup limit and the host's memory."""
    found = [value for value in (_cgroup_limit(proc / "self" / "cgroup", cgroup_root),
                                 _host_memory(proc / "meminfo")) if value is not None]
    return min(found) if found else None


def default_budget(limit: int | None) -> int:
    """The default multi-model budget: :data:`DEFAULT_BUDGET_FRACTION` of ``limit``.

    With no known limit (not Linux), 1 GiB: small enough to be noticed, never unbounded.
    """
    if limit is None:
        return 1 << 30
    return int(limit * DEFAULT_BUDGET_FRACTION)


def resident_bytes() -> int:
    """This process's resident set size (``/proc/self/statm``), or 0 where unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


#: glibc ``mallopt`` parameter: the most malloc arenas a process may create
_M_ARENA_MAX = -8


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL("libc.so.6")


def single_malloc_arena() -> None:
    """Make every thread allocate from glibc's main arena (a no-op elsewhere).

    Models load in a helper thread, and glibc gives threads their own arenas, whose freed top
    chunk ``malloc_trim`` does not give back: a model loaded there would keep its memory after
    the unload. Call before the loader thread starts.
    """
    try:
        _libc().mallopt(_M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass


def give_back_free_memory() -> None:
    """Return freed heap pages to the system (glibc ``malloc_trim``; a no-op elsewhere).

    After a model is dropped, glibc keeps freed heap memory mapped (from the second large
    allocation on, its adaptive mmap threshold serves such sizes from the heap), so the
    process would stay as big as before and an unload would not free what it promises.
    """
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):
        pass
