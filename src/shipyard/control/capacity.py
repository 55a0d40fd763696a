"""Capacity on one engine: what work reserves, a ledger of it, and one queue in arrival order.

Each job host, transform instance and endpoint instance reserves its instance type's memory
and CPUs (``contract.instances``), capped at the machine's, CPUs divided by the setting
``cpu_overcommit`` (CPU is shared in time; memory is not, so it is never overcommitted).
``local`` and unknown ``ml.*`` types reserve nothing (no limit is known for them).

Work is placed whole (every host of a job, every instance of an endpoint's fleet, or none)
and strictly in the order it asked: the first entry of the queue that does not fit stops
every entry behind it, so a big job is never starved by small ones that keep fitting
around it. An entry that could not fit even on an empty machine (four ``ml.m5.4xlarge``
hosts on a 16 GiB machine) runs alone, once it is first in the queue and nothing holds
capacity. An endpoint's blue/green fleet is fitted beside everything but the fleet it
replaces (``beside``): the two overlap only until traffic moves.

The ledger is a SQLite file of the data directory (``capacity.db``), shared by the plane's
threads and detached supervisors alike; the queue's order is its row numbers, so a restarted
plane keeps it. A runtime that places work by reservations itself (a cluster scheduler:
``Runtime.places_by_reservation``) bypasses it, as does the setting ``capacity_queue`` off.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.contract.instances import GIB, resources_for
from shipyard.control.state import records
from shipyard.control.state.sqlite import SqliteFile, sqlite_errors
from shipyard.errors import ResourceNotFound, ShipyardError

if TYPE_CHECKING:
    from shipyard.control.context import Context

__all__ = ["Demand", "Entry", "Ledger", "Ticket", "Totals", "demand_for", "demand_of",
           "enqueue", "fits", "need_of", "release", "reserve", "snapshot", "sweep_jobs",
           "totals_for", "waiting_message"]

log = logging.getLogger(__name__)

#: How often work waiting in the queue looks again.
POLL_SECONDS = 0.25
_EPSILON = 1e-9

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reservations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    unit TEXT NOT NULL,
    hosts INTEGER NOT NULL,
    cpus REAL NOT NULL,
    memory INTEGER NOT NULL,
    what TEXT NOT NULL,
    beside TEXT,
    held INTEGER NOT NULL DEFAULT 0,
    queued_at REAL NOT NULL,
    UNIQUE (kind, owner, unit)
);
"""


@dataclass(frozen=True)
class Totals:
    """What the ledger shares out; 0 in a dimension: unknown, not counted."""

    cpus: float
    memory_bytes: int


@dataclass(frozen=True)
class Demand:
    """What one piece of work reserves, every host together."""

    hosts: int
    cpus: float
    memory_bytes: int
    #: In words: "2 x ml.m5.large".
    what: str


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str
    owner: str
    unit: str
    demand: Demand
    beside: str | None
    held: bool
    queued_at: float


@dataclass(frozen=True)
class Ticket:
    """Where one entry stands: held, or waiting with ``ahead`` entries before it."""

    held: bool
    ahead: int
    demand: Demand
    #: What everything held reserves now.
    used_cpus: float
    used_memory_bytes: int


def demand_for(instance_type: str, count: int, totals: Totals, overcommit: float) -> Demand:
    """What ``count`` hosts of ``instance_type`` reserve on a machine of ``totals`` (pure)."""
    resources = resources_for(instance_type)
    cpus = (resources.cpus if resources else None) or 0.0
    memory = (resources.memory_bytes if resources else None) or 0
    if totals.cpus > 0:
        cpus = min(cpus, totals.cpus)
    if totals.memory_bytes > 0:
        memory = min(memory, totals.memory_bytes)
    return Demand(count, count * cpus / overcommit, count * memory,
                  f"{count} x {instance_type}")


def demand_of(needs: Sequence[tuple[str, int]], totals: Totals, overcommit: float) -> Demand:
    """What hosts of several types reserve together (an endpoint's variants) (pure)."""
    parts = [demand_for(t, c, totals, overcommit) for t, c in needs]
    return Demand(sum(p.hosts for p in parts), sum(p.cpus for p in parts),
                  sum(p.memory_bytes for p in parts), " + ".join(p.what for p in parts))


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _cpu(n: float) -> str:
    return f"{n:.2f}".rstrip("0").rstrip(".") + (" CPU" if n <= 1 else " CPUs")


def waiting_message(ticket: Ticket, totals: Totals) -> str:
    """The StatusMessage of work in the queue."""
    demand = ticket.demand
    free = []
    if totals.memory_bytes > 0:
        free.append(_gib(max(0, totals.memory_bytes - ticket.used_memory_bytes)))
    if totals.cpus > 0:
        free.append(_cpu(max(0.0, totals.cpus - ticket.used_cpus)))
    ahead = (f"{ticket.ahead} ahead in the queue" if ticket.ahead
             else "first in the queue")
    return (f"Waiting for capacity: needs {_gib(demand.memory_bytes)} memory and "
            f"{_cpu(demand.cpus)} ({demand.what}); {' and '.join(free) or 'nothing'} free; "
            f"{ahead}")


_translate = sqlite_errors("capacity ledger")


class Ledger(SqliteFile):
    """Reservations and the queue, in one SQLite file shared by threads and processes."""

    _errors = staticmethod(_translate)

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA, "opening the capacity ledger")

    def request(self, kind: str, owner: str, unit: str, demand: Demand, totals: Totals, *,
                beside: str | None = None) -> Ticket:
        """Queue ``(kind, owner, unit)`` (again: it keeps its place) and admit, in order,
        what fits; where this entry stands then. Without ``beside``, an entry of the same
        owner left by a run that did not finish (a restarted endpoint creation) is taken
        over under ``unit``, place and reservation included."""
        with self._tx(f"reserving for {kind} {owner}") as conn:
            found = conn.execute("SELECT 1 FROM reservations WHERE kind = ? AND owner = ? AND"
                                 " unit = ?", (kind, owner, unit)).fetchone()
            if found is None and beside is None:
                conn.execute("UPDATE reservations SET unit = ? WHERE seq = (SELECT MIN(seq)"
                             " FROM reservations WHERE kind = ? AND owner = ?)",
                             (unit, kind, owner))
                found = conn.execute("SELECT 1 FROM reservations WHERE kind = ? AND"
                                     " owner = ? AND unit = ?", (kind, owner, unit)).fetchone()
            if found is None:
                conn.execute(
                    "INSERT INTO reservations (kind, owner, unit, hosts, cpus, memory, what,"
                    " beside, queued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (kind, owner, unit, demand.hosts, demand.cpus, demand.memory_bytes,
                     demand.what, beside, time.time()))
            entries = _admit(conn, totals)
        return _ticket(entries, kind, owner, unit)

    def hold(self, kind: str, owner: str, unit: str, demand: Demand) -> bool:
        """Count as held what runs already without an entry (work started by a version
        without the ledger); False when it had one."""
        with self._tx(f"counting {kind} {owner}") as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO reservations (kind, owner, unit, hosts, cpus, memory,"
                " what, held, queued_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)",
                (kind, owner, unit, demand.hosts, demand.cpus, demand.memory_bytes,
                 demand.what, time.time()))
            return cursor.rowcount > 0

    def release(self, kind: str, owner: str, unit: str | None = None) -> None:
        """Forget an entry, held or queued (every entry of ``owner`` without ``unit``);
        what waits behind it is admitted by the next request."""
        with self._tx(f"releasing {kind} {owner}") as conn:
            if unit is None:
                conn.execute("DELETE FROM reservations WHERE kind = ? AND owner = ?",
                             (kind, owner))
            else:
                conn.execute("DELETE FROM reservations WHERE kind = ? AND owner = ? AND"
                             " unit = ?", (kind, owner, unit))

    def entries(self) -> list[Entry]:
        """Every entry, in queue order (held ones among them)."""
        with _translate("reading the capacity ledger"):
            rows = self._conn().execute(_SELECT).fetchall()
        return [_entry(row) for row in rows]

    def sweep(self, keep: Callable[[Entry], bool]) -> list[Entry]:
        """Forget the entries ``keep`` refuses (their owner ended while no plane ran)."""
        gone = [e for e in self.entries() if not keep(e)]
        for entry in gone:
            self.release(entry.kind, entry.owner, entry.unit)
        return gone


_SELECT = ("SELECT seq, kind, owner, unit, hosts, cpus, memory, what, beside, held, queued_at"
           " FROM reservations ORDER BY seq")


def _entry(row: tuple[object, ...]) -> Entry:
    seq, kind, owner, unit, hosts, cpus, memory, what, beside, held, queued_at = row
    return Entry(int(str(seq)), str(kind), str(owner), str(unit),
                 Demand(int(str(hosts)), float(str(cpus)), int(str(memory)), str(what)),
                 None if beside is None else str(beside), bool(held), float(str(queued_at)))


def _admit(conn: sqlite3.Connection, totals: Totals) -> list[Entry]:
    """Mark held, in order, every queued entry that fits; stop at the first that does not."""
    entries = [_entry(r) for r in conn.execute(_SELECT).fetchall()]
    held = [e for e in entries if e.held]
    admitted = []
    for entry in entries:
        if entry.held:
            continue
        others = [h for h in held if not (entry.beside is not None and h.kind == entry.kind
                                          and h.owner == entry.owner
                                          and h.unit == entry.beside)]
        if not fits(entry.demand, others, totals):
            break
        held.append(entry)
        admitted.append(entry.seq)
    for seq in admitted:
        conn.execute("UPDATE reservations SET held = 1 WHERE seq = ?", (seq,))
    return [e if e.seq not in admitted else Entry(e.seq, e.kind, e.owner, e.unit, e.demand,
                                                  e.beside, True, e.queued_at)
            for e in entries]


def fits(demand: Demand, held: list[Entry], totals: Totals) -> bool:
    """Whether ``demand`` fits beside ``held`` (pure); anything fits where nothing is held."""
    if not held:
        return True
    cpus = sum(e.demand.cpus for e in held) + demand.cpus
    memory = sum(e.demand.memory_bytes for e in held) + demand.memory_bytes
    return ((totals.cpus <= 0 or cpus <= totals.cpus + _EPSILON)
            and (totals.memory_bytes <= 0 or memory <= totals.memory_bytes))


def _ticket(entries: list[Entry], kind: str, owner: str, unit: str) -> Ticket:
    mine = next(e for e in entries if (e.kind, e.owner, e.unit) == (kind, owner, unit))
    held = [e for e in entries if e.held]
    return Ticket(mine.held, sum(1 for e in entries if not e.held and e.seq < mine.seq),
                  mine.demand, sum(e.demand.cpus for e in held),
                  sum(e.demand.memory_bytes for e in held))


# -- the control plane's side ---------------------------------------------------------------
def totals_for(ctx: Context) -> Totals | None:
    """What the ledger shares out on this plane, or None when it does not apply: the setting
    ``capacity_queue`` is off, the runtime places work by reservations itself, or neither the
    settings nor the runtime say what the machine has."""
    settings = ctx.settings
    if not settings.capacity_queue or ctx.runtime.places_by_reservation:
        return None
    machine = ctx.runtime.capacity()
    cpus = settings.capacity_cpus
    if cpus is None:
        cpus = machine.cpus if machine is not None else 0.0
    memory = (settings.capacity_memory_mb * 1024 * 1024 if settings.capacity_memory_mb
              is not None else machine.memory_bytes if machine is not None else 0)
    if cpus <= 0 and memory <= 0:
        return None
    return Totals(float(cpus), int(memory))


def reserve(ctx: Context, kind: str, owner: str, needs: Sequence[tuple[str, int]], *,
            unit: str = "", beside: str | None = None,
            cancelled: Callable[[], bool] = lambda: False,
            waiting: Callable[[str], None] = lambda message: None,
            poll: float = POLL_SECONDS) -> bool:
    """Block until ``needs`` (``(instance type, count)`` pairs) are reserved for ``owner``
    (True), or until ``cancelled()`` says to give up (False, its place given up).
    ``waiting(message)`` is called whenever what it waits for changes, first with the
    message, and with "" once it is admitted after a wait."""
    totals = totals_for(ctx)
    if totals is None:
        return not cancelled()
    demand = demand_of(needs, totals, ctx.settings.cpu_overcommit)
    said = ""
    while True:
        if cancelled():
            ctx.capacity.release(kind, owner, unit)
            return False
        ticket = ctx.capacity.request(kind, owner, unit, demand, totals, beside=beside)
        if ticket.held:
            if said:
                waiting("")
            return True
        message = waiting_message(ticket, totals)
        if message != said:
            if not said:
                log.info("%s %s: %s", kind, owner, message)
            waiting(message)
            said = message
        time.sleep(poll)


def release(ctx: Context, kind: str, owner: str, unit: str | None = None) -> None:
    """Give back what ``owner`` reserved (idempotent; nothing where the ledger is off). A
    failure is logged, not raised: the next plane's sweep forgets what was left."""
    try:
        if totals_for(ctx) is not None:
            ctx.capacity.release(kind, owner, unit)
    except ShipyardError as exc:
        log.warning("%s %s: could not give back its capacity: %s", kind, owner, exc)


def sweep_jobs(ctx: Context, kinds: Collection[str]) -> list[Entry]:
    """After a restart: forget the entries of jobs of ``kinds`` that no longer run or wait
    (ended, or gone, while no plane ran). The others keep their place and what they hold:
    a job that waited is queued again where it was, one that ran holds what it held."""
    if not ctx.settings.capacity_queue:
        return []

    def keep(entry: Entry) -> bool:
        if entry.kind not in kinds:
            return True
        try:
            row = ctx.store.get_job(entry.kind, entry.owner)
        except ResourceNotFound:
            return False
        return row.status in records.ACTIVE_STATUSES and row.runner.get("phase") != "done"

    gone = ctx.capacity.sweep(keep)
    totals = totals_for(ctx)
    if totals is not None:
        for kind in kinds:
            for row in ctx.store.list_jobs(kind, statuses=records.ACTIVE_STATUSES,
                                           limit=100_000):
                need = need_of(row.record)
                if need is not None and row.runner.get("containers"):
                    ctx.capacity.hold(kind, row.name, "", demand_for(
                        need[0], need[1], totals, ctx.settings.cpu_overcommit))
    return gone


def need_of(record: dict[str, Any]) -> tuple[str, int] | None:
    """The instance type and count a job's record asks for (``ResourceConfig``,
    ``ProcessingResources.ClusterConfig``, ``TransformResources``); None: it runs no host."""
    for member, inner in (("ResourceConfig", ""), ("ProcessingResources", "ClusterConfig"),
                          ("TransformResources", "")):
        block = record.get(member)
        if isinstance(block, dict):
            block = block.get(inner) if inner else block
            if isinstance(block, dict):
                return (str(block.get("InstanceType") or "local"),
                        int(block.get("InstanceCount") or 1))
    return None


def enqueue(ctx: Context, kind: str, name: str, record: dict[str, Any]) -> None:
    """Take a new job's place in the queue as it is accepted, so jobs queue in the order
    they were created whichever runner gets going first (its runner waits there)."""
    totals = totals_for(ctx)
    need = need_of(record)
    if totals is None or need is None:
        return
    ctx.capacity.request(kind, name, "", demand_for(need[0], need[1], totals,
                                                    ctx.settings.cpu_overcommit), totals)


def snapshot(ctx: Context) -> dict[str, Any]:
    """The ledger as a console or CLI shows it: what is shared out, what holds capacity and
    what waits, in queue order (``Position`` 1 is next). ``Enabled`` False: no ledger here
    (the setting is off, the runtime places work itself, or the machine is unknown)."""
    totals = totals_for(ctx)
    if totals is None:
        return {"Enabled": False, "Held": [], "Waiting": []}
    entries = ctx.capacity.entries()

    def row(entry: Entry) -> dict[str, Any]:
        return {"Kind": entry.kind, "Name": entry.owner, "What": entry.demand.what,
                "Cpus": entry.demand.cpus, "MemoryBytes": entry.demand.memory_bytes,
                "Since": entry.queued_at}

    held = [e for e in entries if e.held]
    return {
        "Enabled": True, "Cpus": totals.cpus, "MemoryBytes": totals.memory_bytes,
        "CpusHeld": sum(e.demand.cpus for e in held),
        "MemoryBytesHeld": sum(e.demand.memory_bytes for e in held),
        "Held": [row(e) for e in held],
        "Waiting": [{"Position": i + 1, **row(e)}
                    for i, e in enumerate(e for e in entries if not e.held)],
    }
