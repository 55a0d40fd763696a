"""What a Docker Swarm manager's answers mean to the swarm runtime (``runtimes.swarm``):
service names, the states of tasks, nodes, and the reservations the swarm counts. Pure
functions of the manager's JSON; nothing here calls the engine."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from shipyard.contract.labels import CONTAINER_NAME_LABEL, SHIPPED_LABEL
from shipyard.runtimes.shipping import Shipped

#: The label every task's container carries on its node (set by the swarm itself).
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"
#: Swarm service names are DNS labels.
_MAX_SERVICE_NAME = 63
WAITING_STATES = frozenset({"new", "pending", "assigned", "accepted", "ready", "preparing",
                            "starting"})
#: Desired states in which a task holds its reservation for the constraint enforcer: a
#: finished task of a service that still exists included (desired ``running`` still).
HOLDING_STATES = frozenset({"assigned", "accepted", "preparing", "ready", "starting",
                            "running"})
EXITED_STATES = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned", "remove"})


def service_name(container: str) -> str:
    """The service standing for the container ``container``: its own name when that is a
    valid service name, else a shortened one with a digest of the whole (still unique)."""
    if len(container) <= _MAX_SERVICE_NAME:
        return container
    digest = hashlib.sha256(container.encode()).hexdigest()[:12]
    return f"{container[: _MAX_SERVICE_NAME - 13].rstrip('-_.')}-{digest}"


@dataclass(frozen=True)
class NodeInfo:
    """One node of the swarm as ``shipyard cluster status`` shows it."""

    id: str
    hostname: str
    address: str
    state: str
    availability: str
    role: str
    cpus: float
    memory_bytes: int
    reserved_cpus: float = 0.0
    reserved_memory_bytes: int = 0
    #: The containers (service names) with a task on it now.
    containers: tuple[str, ...] = field(default_factory=tuple)

    @property
    def schedulable(self) -> bool:
        return self.state == "ready" and self.availability == "active"


def container_of(service: dict[str, Any]) -> str:
    spec = service.get("Spec") or {}
    return str((spec.get("Labels") or {}).get(CONTAINER_NAME_LABEL) or spec.get("Name", ""))


def isolated_network(container: str) -> str:
    """The internal network of its own a container without a network gets."""
    return f"{service_name(container)}-isolated"


def pinned_node(service: dict[str, Any]) -> str:
    """The node a service was placed on by its constraint (before its task has a node)."""
    placement = ((service.get("Spec") or {}).get("TaskTemplate") or {}).get("Placement") or {}
    for constraint in placement.get("Constraints") or []:
        if constraint.startswith("node.id=="):
            return str(constraint.removeprefix("node.id=="))
    return ""


def schedulable(node: dict[str, Any]) -> bool:
    return ((node.get("Status") or {}).get("State") == "ready"
            and (node.get("Spec") or {}).get("Availability") == "active")


def split_tag(image: str) -> tuple[str, str]:
    if ":" in image.rsplit("/", 1)[-1]:
        repository, tag = image.rsplit(":", 1)
        return repository, tag
    return image, "latest"


def has_image(client: Any, image: str) -> bool:
    try:
        client.inspect_image(image)
    except Exception:
        return False
    return True
def helper_name(container: str, step: str) -> str:
    """The container name of the ``step`` helper of ``container`` (its service is named
    from it as any container's is)."""
    return f"{container}-{step}"


def volume_name(container: str, index: int) -> str:
    return f"{service_name(container)}-m{index}"


def shipped_of(service: dict[str, Any] | None) -> tuple[Shipped, ...]:
    labels = ((service or {}).get("Spec") or {}).get("Labels") or {}
    try:
        return tuple(Shipped.from_json(item) for item in json.loads(labels[SHIPPED_LABEL]))
    except (KeyError, ValueError, TypeError):
        return ()


def committed(services: list[dict[str, Any]], tasks: list[dict[str, Any]]
              ) -> dict[str, tuple[int, int, int]]:
    """Per node: NanoCPUs and bytes reserved, and by how many tasks, as the constraint
    enforcer counts them: every task in one of :data:`HOLDING_STATES` as desired, whatever it
    is now (a removed service's tasks a moment after it is gone); one not yet assigned
    counts on the node its service is pinned to."""
    by_id = {s["ID"]: s for s in services}
    found: dict[str, tuple[int, int, int]] = {}
    for task in tasks:
        if task.get("DesiredState") not in HOLDING_STATES:
            continue
        node_id = task.get("NodeID") or pinned_node(by_id.get(task.get("ServiceID", ""), {}))
        if not node_id:
            continue
        reserved = (((task.get("Spec") or {}).get("Resources") or {}).get(
            "Reservations") or {})
        cpus, memory, count = found.get(node_id, (0, 0, 0))
        found[node_id] = (cpus + int(reserved.get("NanoCPUs") or 0),
                          memory + int(reserved.get("MemoryBytes") or 0), count + 1)
    return found


def node_infos(nodes: list[dict[str, Any]], tasks: list[dict[str, Any]],
               services: list[dict[str, Any]]) -> list[NodeInfo]:
    """Every node, with what its running ``tasks`` reserve and which containers they are."""
    by_id = {s["ID"]: s for s in services}
    by_node: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        if task.get("NodeID") and (task.get("Status") or {}).get("State") not in (
                EXITED_STATES):
            by_node.setdefault(task["NodeID"], []).append(task)
    result = []
    for node in nodes:
        resources = (node.get("Description") or {}).get("Resources") or {}
        mine = by_node.get(node["ID"], [])
        reserved = [(t.get("Spec") or {}).get("Resources", {}).get("Reservations") or {}
                    for t in mine]
        names = tuple(sorted(container_of(by_id.get(t.get("ServiceID", ""), {}))
                             for t in mine))
        result.append(NodeInfo(
            id=node["ID"], hostname=(node.get("Description") or {}).get("Hostname", ""),
            address=(node.get("Status") or {}).get("Addr", ""),
            state=(node.get("Status") or {}).get("State", ""),
            availability=(node.get("Spec") or {}).get("Availability", ""),
            role=(node.get("Spec") or {}).get("Role", ""),
            cpus=int(resources.get("NanoCPUs") or 0) / 1e9,
            memory_bytes=int(resources.get("MemoryBytes") or 0),
            reserved_cpus=sum(int(r.get("NanoCPUs") or 0) for r in reserved) / 1e9,
            reserved_memory_bytes=sum(int(r.get("MemoryBytes") or 0) for r in reserved),
            containers=names))
    return result


def best_node(nodes: list[dict[str, Any]], reserved: dict[str, tuple[int, int, int]],
              siblings: dict[str, int], cpus: int | None, memory: int | None, *,
              spread: bool) -> str | None:
    """The schedulable node with room for ``cpus`` NanoCPUs and ``memory`` bytes beside what
    is ``reserved`` there (:func:`committed`); ``spread``: the one with the fewest
    ``siblings`` (containers of the same job or endpoint), then the fewest tasks; else the
    one with the least memory left. None: no node has room."""
    best: tuple[Any, ...] | None = None
    for node in nodes:
        if not schedulable(node):
            continue
        resources = (node.get("Description") or {}).get("Resources") or {}
        used_cpus, used_memory, count = reserved.get(node["ID"], (0, 0, 0))
        free_memory = int(resources.get("MemoryBytes") or 0) - used_memory
        if memory and memory > free_memory:
            continue
        if cpus and cpus > int(resources.get("NanoCPUs") or 0) - used_cpus:
            continue
        key: tuple[Any, ...] = ((siblings.get(node["ID"], 0), count, node["ID"]) if spread
                                else (free_memory, node["ID"]))
        if best is None or key < best:
            best = key
    return None if best is None else str(best[-1])


def no_room(cpus: int | None, memory: int | None, ahead: int) -> str:
    """Why a container waits: what it reserves, and how many wait before it."""
    what = ", ".join(part for part in (
        f"{cpus / 1e9:g} CPUs" if cpus else "", f"{memory / 2**20:.0f} MiB" if memory
        else "") if part) or "nothing"
    return (f"no suitable node (insufficient resources: it reserves {what}"
            + (f"; {ahead} ahead of it" if ahead else "") + ")")
