"""Where the swarm runtime puts each container, and the line of those no node has room for.

Each task reserves its memory and a share of its CPUs (``cpus / cpu_overcommit``); the
runtime pins it to a node with room, counted as the swarm's constraint enforcer counts it
(``committed``), the stricter of the swarm's two counts: a task placed where only its
scheduler saw room was seen shut down ("assigned node no longer meets constraints"). What
fits nowhere is held, in the order it came, and placed once it is first in line and a node
has room (the line moves whenever someone asks how a held container is doing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.contract.labels import JOB_KIND_LABEL, JOB_NAME_LABEL
from shipyard.errors import ShipyardError
from shipyard.runtimes.base import ContainerSpec, ContainerState
from shipyard.runtimes.docker import translate_errors
from shipyard.runtimes.swarm_objects import (
    EXITED_STATES,
    best_node,
    committed,
    no_room,
    pinned_node,
)

if TYPE_CHECKING:
    from shipyard.runtimes.swarm import SwarmRuntime

__all__ = ["Held", "Placement"]

#: The most of a node's CPUs or memory one container reserves. Reserving all of it, the
#: swarm's constraint enforcer was seen shutting the task down ("assigned node no longer
#: meets constraints") as the node re-reported its resources.
_RESERVABLE = 0.95


@dataclass
class Held:
    """A container waiting for room; ``make(node_id)`` starts it there."""

    spec: ContainerSpec
    make: Callable[[str], None]


class Placement:
    """``runtime``'s placement: ``spread`` puts the hosts of one job (or the instances of one
    endpoint) on distinct nodes while a node without one of them has room, ``pack`` fills
    nodes."""

    def __init__(self, runtime: SwarmRuntime, mode: str, cpu_overcommit: float) -> None:
        self._rt = runtime
        self.mode = mode
        self._overcommit = max(1.0, cpu_overcommit)
        #: Containers no node has room for yet, in the order they came; guarded by the
        #: runtime's lock, as a held container's last state is.
        self.held: dict[str, Held] = {}
        #: Held while a node is chosen and a service made on it (one at a time).
        self.making = threading.RLock()

    def place(self, spec: ContainerSpec, make: Callable[[str], None]) -> None:
        """Start ``spec`` by ``make(node_id)`` on a node with room, or hold it in line."""
        rt = self._rt
        with self.making:
            with rt._lock:
                queued = bool(self.held)
            node_id = None if queued else self.choose(spec)
            if node_id is None:
                with rt._lock:
                    self.held[spec.name] = Held(spec, make)
                    rt._stopped.pop(spec.name, None)
                return
            make(node_id)

    def held_state(self, name: str) -> ContainerState | None:
        """The state of a container held for room, after moving the line as far as room
        allows. None: not held."""
        rt = self._rt
        with rt._lock:
            if name not in self.held:
                return None
        with self.making:
            while True:
                with rt._lock:
                    first = next(iter(self.held.items()), None)
                if first is None:
                    break
                node_id = self.choose(first[1].spec)
                if node_id is None:
                    break
                with rt._lock:
                    self.held.pop(first[0], None)
                try:
                    first[1].make(node_id)
                except ShipyardError as exc:
                    with rt._lock:
                        rt._stopped[first[0]] = ContainerState(
                            name=first[0], running=False, exit_code=None,
                            finished_at=time.time(), error=f"it could not be started: {exc}")
                if first[0] == name:
                    break
        with rt._lock:
            held = self.held.get(name)
            ahead = list(self.held).index(name) if held is not None else 0
        if held is None:
            return ContainerState(name=name, running=True, waiting="placed on a node")
        return ContainerState(name=name, running=True,
                              waiting=no_room(*self.reservations(held.spec), ahead))

    def reservations(self, spec: ContainerSpec) -> tuple[int | None, int | None]:
        """What ``spec`` reserves: NanoCPUs (its CPUs over the overcommit) and bytes of
        memory, each at most :data:`_RESERVABLE` of the largest node's."""
        largest = self._rt.capacity()
        cpus = memory = None
        if spec.cpus:
            cpus = min(int(spec.cpus * 1e9 / self._overcommit),
                       int(largest.cpus * 1e9 * _RESERVABLE))
        if spec.memory_bytes:
            memory = min(spec.memory_bytes, int(largest.memory_bytes * _RESERVABLE))
        return cpus, memory

    def choose(self, spec: ContainerSpec) -> str | None:
        """The node ``spec`` goes to, or None while none has room for what it reserves.
        ``spread``: the node with the fewest containers of the same job or endpoint, then
        the fewest in all; ``pack``: the one with the least memory left."""
        api = self._rt._api
        cpus, memory = self.reservations(spec)
        with translate_errors():
            reserved = committed(api.services(), api.tasks())
        siblings: dict[str, int] = {}
        owner = {k: v for k, v in spec.labels.items() if k in {JOB_NAME_LABEL, JOB_KIND_LABEL}}
        if owner and self.mode == "spread":
            with translate_errors():
                services = api.services(filters={"label": [f"{k}={v}" for k, v in
                                                           owner.items()]})
            for service in services:
                node_id = pinned_node(service) or self._task_node(service)
                if node_id:
                    siblings[node_id] = siblings.get(node_id, 0) + 1
        return best_node(self._rt._raw_nodes(fresh=True), reserved, siblings, cpus, memory,
                         spread=self.mode == "spread")

    def _task_node(self, service: dict[str, Any]) -> str:
        task = self._rt._task(service)
        if task is None or (task.get("Status") or {}).get("State") in EXITED_STATES:
            return ""
        return str(task.get("NodeID") or "")
