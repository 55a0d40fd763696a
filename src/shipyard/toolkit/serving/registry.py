"""The multi-model registry every worker shares: which models are loaded, LRU and budget.

Multi-model mode (reference 4.8) needs one answer, across forked workers, to "is model X
loaded?": a load or unload that reaches one worker must hold for all. The supervisor creates
the registry before forking, so every worker inherits it:

- the model table, as JSON in an anonymous ``memfd`` (nothing on disk, works on a read-only
  root filesystem), guarded by a POSIX record lock (``lockf``) on that fd: such locks belong
  to the process, so the inherited fd still excludes sibling workers;
- counters in a shared anonymous ``mmap``: the table's generation (bumped on every change,
  so a worker notices one with an 8-byte read per request), the generation each worker last
  applied (so an unload can wait until every worker has let its copy go), and a "last used"
  clock per model slot (written on every invocation, read when choosing what to evict).

Each worker loads a registered model lazily, on its first request for it; a model therefore
costs its measured size once per worker, and the budget counts it that way.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import mmap
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

from shipyard.toolkit.serving.errors import RequestError

#: models loaded at once, at most (each needs a slot for its last-used clock)
MAX_MODELS = 1024
MIB = 1024 * 1024
_GENERATION = struct.Struct("Q")
_CLOCK = struct.Struct("d")
#: a worker slot's "applied generation" while it holds no models: fresh, or dead
_HOLDS_NOTHING = (1 << 64) - 1


class ModelApiError(RequestError):
    """A refused ``/models`` request; ``wire_type`` is MMS's exception name for the JSON body."""

    wire_type: ClassVar[str] = "BadRequestException"


class InvalidModelRequest(ModelApiError):
    """A load request without a usable ``url``/``model_name``, or a bad query (400)."""

    status_code = 400


class ModelNotFound(ModelApiError):
    """No such loaded model, or the load ``url`` does not exist (404)."""

    status_code = 404
    wire_type = "ModelNotFoundException"

    @classmethod
    def named(cls, name: str) -> ModelNotFound:
        return cls(f"Model not found: {name}")


class ModelAlreadyLoaded(ModelApiError):
    """``POST /models`` for a name that is loaded (409)."""

    status_code = 409
    wire_type = "ConflictStatusException"


class ModelTooLarge(ModelApiError):
    """The model cannot fit in the memory budget even with every other model unloaded (507)."""

    status_code = 507
    wire_type = "OutOfMemoryError"


class ModelLoadFailed(ModelApiError):
    """The model's code or ``model_fn`` failed (500, as MMS's "Failed to start workers")."""

    status_code = 500
    wire_type = "InternalServerException"


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One loaded model, as every worker sees it."""

    name: str
    url: str
    #: unique per load: a worker holding another id for this name holds a stale copy
    load_id: str
    slot: int
    #: resident bytes ``model_fn`` added in the first worker that loaded it
    cost: int
    loaded_at: float

    def describe(self) -> dict[str, object]:
        """``GET /models/<name>``: MMS's ``modelName``/``modelUrl``, plus what we measured."""
        return {"modelName": self.name, "modelUrl": self.url, "memoryBytes": self.cost,
                "loadedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))}


@dataclasses.dataclass(frozen=True)
class Admission:
    """What :meth:`Registry.admit` did: the entry now registered and who made room for it."""

    entry: ModelEntry
    generation: int
    evicted: tuple[ModelEntry, ...] = ()
    #: another worker registered the same model first; ``entry`` is theirs
    adopted: bool = False


class Registry:
    """The shared table; see the module docstring. Built by :meth:`create` before the fork."""

    def __init__(self, fd: int, shared: mmap.mmap, workers: int, budget: int) -> None:
        self._fd = fd
        self._shared = shared
        self.workers = workers
        self.budget = budget
        self._seen_at = _GENERATION.size
        self._clocks_at = self._seen_at + workers * _GENERATION.size

    @classmethod
    def create(cls, workers: int, budget: int) -> Registry:
        """A fresh, empty registry for ``workers`` worker slots and ``budget`` bytes."""
        fd = os.memfd_create("shipyard-models", os.MFD_CLOEXEC)
        os.write(fd, b"{}")
        shared = mmap.mmap(-1, _GENERATION.size * (1 + workers) + _CLOCK.size * MAX_MODELS)
        registry = cls(fd, shared, workers, budget)
        for slot in range(workers):
            registry.worker_gone(slot)
        return registry

    # -- cheap shared counters (no lock) -------------------------------------------------------

    def generation(self) -> int:
        """The table's version; any change to it bumps this."""
        (value,) = _GENERATION.unpack_from(self._shared, 0)
        return int(value)

    def touch(self, slot: int) -> None:
        """Record a use of the model in ``slot`` (CLOCK_MONOTONIC is system-wide)."""
        _CLOCK.pack_into(self._shared, self._clocks_at + slot * _CLOCK.size, time.monotonic())

    def last_used(self, slot: int) -> float:
        (value,) = _CLOCK.unpack_from(self._shared, self._clocks_at + slot * _CLOCK.size)
        return float(value)

    def applied(self, worker: int, generation: int) -> None:
        """Worker ``worker`` now holds only models of table ``generation``."""
        _GENERATION.pack_into(self._shared, self._seen_at + worker * _GENERATION.size,
                              generation)

    def worker_gone(self, worker: int) -> None:
        """Worker ``worker`` holds no models (not started yet, or dead): never waited for."""
        self.applied(worker, _HOLDS_NOTHING)

    def all_applied(self, generation: int) -> bool:
        """Whether every worker has applied ``generation`` (dropped what it unloaded)."""
        return all(
            _GENERATION.unpack_from(self._shared, self._seen_at + w * _GENERATION.size)[0]
            >= generation
            for w in range(self.workers)
        )

    # -- the table (under the lock) ------------------------------------------------------------

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        fcntl.lockf(self._fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _read(self) -> dict[str, ModelEntry]:
        size = os.fstat(self._fd).st_size
        raw = json.loads(os.pread(self._fd, size, 0) or b"{}")
        return {name: ModelEntry(**fields) for name, fields in raw.items()}

    def _write(self, entries: dict[str, ModelEntry]) -> int:
        data = json.dumps({n: dataclasses.asdict(e) for n, e in entries.items()}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        generation = self.generation() + 1
        _GENERATION.pack_into(self._shared, 0, generation)
        return generation

    def snapshot(self) -> tuple[int, dict[str, ModelEntry]]:
        """The table and its generation, read consistently."""
        with self._locked(exclusive=False):
            return self.generation(), self._read()

    def remove(self, name: str) -> tuple[ModelEntry, int]:
        """Unregister ``name``: its entry and the new generation; ``ModelNotFound`` if absent."""
        with self._locked(exclusive=True):
            entries = self._read()
            entry = entries.pop(name, None)
            if entry is None:
                raise ModelNotFound.named(name)
            return entry, self._write(entries)

    def admit(self, name: str, url: str, load_id: str, cost: int, adopt: bool) -> Admission:
        """Register a model one worker has loaded, unloading least-recently-used ones for room.

        ``cost`` is what it took in that worker; it counts once per worker against the budget.
        A name already registered is a 409, unless ``adopt`` and it is the same ``url`` (two
        workers loading one model on demand at once): then the first registration stands.
        """
        need = cost * self.workers
        with self._locked(exclusive=True):
            entries = self._read()
            existing = entries.get(name)
            if existing is not None:
                if adopt and existing.url == url:
                    return Admission(existing, self.generation(), adopted=True)
                raise ModelAlreadyLoaded(f"Model {name} is already registered.")
            if need > self.budget:
                raise ModelTooLarge(
                    f"Model {name} needs {need / MIB:.1f} MiB ({cost / MIB:.1f} MiB in each of "
                    f"{self.workers} workers); the memory budget (SHIPYARD_MME_MEMORY_MB) is "
                    f"{self.budget / MIB:.1f} MiB")
            evicted: list[ModelEntry] = []
            while entries and (
                sum(e.cost for e in entries.values()) * self.workers + need > self.budget
                or len(entries) >= MAX_MODELS
            ):
                victim = min(entries.values(), key=lambda e: self.last_used(e.slot))
                evicted.append(entries.pop(victim.name))
            used = {e.slot for e in entries.values()}
            slot = next(s for s in range(MAX_MODELS) if s not in used)
            entry = ModelEntry(name=name, url=url, load_id=load_id, slot=slot, cost=cost,
                               loaded_at=time.time())
            entries[name] = entry
            self.touch(slot)
            return Admission(entry, self._write(entries), tuple(evicted))
