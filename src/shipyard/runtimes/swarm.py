"""A Docker Swarm cluster as a :class:`~shipyard.runtimes.base.Runtime`.

Each container the control plane starts becomes one swarm *service* with one task
(``replicated``, one replica, restart condition none): the service keeps the container's
name, so a restarted control plane finds it again, and a failed host is never retried by the
swarm (the platform decides what a failure means, as on one engine). Found when tried: a
service with several replicas numbers its slots so that one host's name becomes the node id,
and a failing multi-replica job is retried without end; one replica per service avoids both.
A ``replicated-job`` service's ended task keeps holding its reservation for the swarm's
constraint enforcer, even once the service is gone (docs/runtimes.md).

- **Placement** (:mod:`~shipyard.runtimes.swarm_placement`). Each task reserves its
  memory and a share of its CPUs (``cpus / cpu_overcommit``). The runtime pins it to a node
  with room, counted as the constraint enforcer counts (the scheduler counts otherwise), and
  holds what fits nowhere, in order, until room frees, reported as
  :attr:`ContainerState.waiting`. With ``placement="spread"`` the hosts of one job (or the
  instances of one endpoint) go to distinct nodes while a node without one of them has room;
  ``pack`` fills nodes.
- **Networks** are attachable overlays; hosts resolve each other by hostname and alias
  (``algo-1``...) with DNS round robin (no virtual IP: the routing mesh needs IPVS, which
  some kernels lack).
- **Ports** are published in host mode on a port the node picks; the platform reaches the
  container at the node's address (:attr:`ContainerState.published_host`).
- **Images** reach the nodes through a registry they pull from (``registry``), else by
  ``docker save | docker load`` into each node engine the runtime knows (``node_engines``),
  else by name (the nodes pull it themselves).
- **Mounts** under a path every node shares (``shared_paths``, e.g. an NFS export holding
  the data directory) are bind mounts on the node. With a ``depot`` (an S3 prefix the nodes
  reach), the folders the platform made under ``platform_root`` (config files, code, output
  folders) and the mounts' own ``s3://`` objects are *shipped* (``runtimes.shipping``): a
  stager service on the container's node fills a volume per mount first, the container is
  then made on that node, and after it ends a collector returns what it wrote. Any other path
  is refused before a task is made, with the setting to change.
- **Signals, stats, OOM**: through the node's engine when the runtime knows it; otherwise a
  SIGTERM or SIGKILL removes the service (the swarm sends SIGTERM and kills after the stop
  grace period) and no stats are sampled.
- **Node loss**: a task on a node the manager marks down is reported exited (code 137) with
  an error naming the node.

Like the Docker runtime, it never runs a container privileged nor hands one the engine's
socket, and every Docker SDK error becomes a ``shipyard.errors`` one (``translate_errors``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.contract.labels import (
    CAPABILITIES_LABEL,
    CONTAINER_NAME_LABEL,
    HELPER_LABEL,
    MANAGED_LABEL,
    SHIPPED_LABEL,
)
from shipyard.errors import (
    ResourceInUse,
    ResourceNotFound,
    RuntimeUnavailable,
    ShipyardError,
    ValidationError,
)
from shipyard.runtimes.base import (
    Capacity,
    Confinement,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    LogLine,
    Mount,
    Runtime,
    wait_by_polling,
)
from shipyard.runtimes.docker import (
    DockerRuntime,
    check_reference,
    parse_docker_time,
    parse_log_stream,
    stats_from,
    translate_errors,
)
from shipyard.runtimes.docker import _body_blocks as body_blocks
from shipyard.runtimes.docker import _check_mount_source as check_mount_source
from shipyard.runtimes.docker import _frames as frames
from shipyard.runtimes.shipping import Depot, Shipped
from shipyard.runtimes.swarm_images import ImageDistribution
from shipyard.runtimes.swarm_objects import (
    EXITED_STATES,
    SERVICE_NAME_LABEL,
    WAITING_STATES,
    NodeInfo,
    container_of,
    helper_name,
    isolated_network,
    node_infos,
    schedulable,
    service_name,
    shipped_of,
    volume_name,
)
from shipyard.runtimes.swarm_placement import Placement
from shipyard.runtimes.swarm_shipping import NodeStaging

if TYPE_CHECKING:
    import docker

__all__ = ["NodeInfo", "SwarmRuntime", "service_name"]

log = logging.getLogger(__name__)

#: How often :meth:`SwarmRuntime.wait` and a following log reader look at a task.
_POLL_SECONDS = 0.25
#: How long the node list is trusted (placement asks it for every host it starts).
_NODES_TTL = 2.0


class SwarmRuntime(Runtime):
    """Containers as one-task services of a Docker Swarm whose manager is ``manager_url``
    (``None``: the local engine, or ``DOCKER_HOST``)."""

    kind = "swarm"
    places_by_reservation = True
    shared_paths_setting = "swarm_shared_paths"

    def __init__(
        self, manager_url: str | None = None, *, labels: dict[str, str] | None = None,
        confinement: Confinement | None = None, registry: str | None = None,
        registry_push: str | None = None,
        node_engines: dict[str, str] | None = None, placement: str = "spread",
        shared_paths: tuple[Path, ...] = (), cpu_overcommit: float = 1.0,
        stop_grace_seconds: float = 120.0, client: docker.DockerClient | None = None,
        depot: Depot | None = None, platform_root: Path | None = None,
        stager_image: str = "shipyard/base:bookworm-py311",
    ) -> None:
        if placement not in {"spread", "pack"}:
            raise ValidationError("setting swarm_placement must be spread or pack")
        if client is None:
            with translate_errors():
                import docker

                client = (docker.DockerClient(base_url=manager_url, timeout=120)
                          if manager_url else docker.from_env(timeout=120))
        self._client = client
        self._api = client.api
        # The manager's own engine: images are checked there and saved from there.
        self._engine = DockerRuntime(client, labels=labels, confinement=confinement)
        self._labels = dict(labels or {})
        self._confinement = confinement or Confinement()
        self._node_urls = dict(node_engines or {})
        self._node_clients: dict[str, Any] = {}
        self._shared = tuple(Path(os.path.realpath(p)) for p in shared_paths)
        self._grace_ns = int(stop_grace_seconds * 1e9)
        self._lock = threading.Lock()
        #: How the nodes get images: a registry, else loads onto the known node engines.
        self._images = ImageDistribution(self, registry, registry_push)
        #: Containers whose service was removed to stop them: their last state.
        self._stopped: dict[str, ContainerState] = {}
        self._nodes: tuple[float, list[dict[str, Any]]] = (0.0, [])
        self._depot = depot
        self._platform_root = Path(os.path.realpath(platform_root)) if platform_root else None
        self._stager_image = stager_image
        self.stages_on_nodes = depot is not None
        #: Stagers and collectors of containers with shipped mounts.
        self._ships = NodeStaging(self)
        #: Which node each container goes to, and the line of those no node has room for.
        self._placement = Placement(self, placement, cpu_overcommit)

    # -- the cluster ---------------------------------------------------------------------
    def ping(self) -> None:
        """Raise ``RuntimeUnavailable`` unless the manager answers and is a swarm manager."""
        with translate_errors():
            info = self._api.info()
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise RuntimeUnavailable(
                "the runtime is swarm but the engine it talks to is not a swarm manager "
                "(docker swarm init, or set swarm_manager to a manager's address)")

    def close(self) -> None:
        for node_client in self._node_clients.values():
            node_client.close()
        self._client.close()

    def _raw_nodes(self, fresh: bool = False) -> list[dict[str, Any]]:
        at, nodes = self._nodes
        if fresh or time.monotonic() - at > _NODES_TTL:
            with translate_errors():
                nodes = self._api.nodes()
            self._nodes = (time.monotonic(), nodes)
        return nodes

    def nodes(self) -> list[NodeInfo]:
        """Every node, with what its running tasks reserve and which containers they are."""
        with translate_errors():
            tasks = self._api.tasks(filters={"desired-state": "running"})
            services = self._api.services()
        return node_infos(self._raw_nodes(fresh=True), tasks, services)

    def capacity(self) -> Capacity:
        """The largest schedulable node: the most one container can be given."""
        best = Capacity(0.0, 0, 0)
        for node in self._raw_nodes():
            if not schedulable(node):
                continue
            resources = (node.get("Description") or {}).get("Resources") or {}
            cpus = int(resources.get("NanoCPUs") or 0) / 1e9
            memory = int(resources.get("MemoryBytes") or 0)
            if (memory, cpus) > (best.memory_bytes, best.cpus):
                best = Capacity(cpus, memory, 0)
        return best

    # -- images --------------------------------------------------------------------------
    def check_reference(self, image: str) -> None:
        check_reference(image)

    def check_image(self, image: str) -> None:
        """The image must be in the manager's engine (where it was built or loaded): from
        there it is pushed or loaded to the nodes at the first start."""
        self._engine.check_image(image)

    def _node_client(self, hostname: str) -> Any:
        with self._lock:
            found = self._node_clients.get(hostname)
        if found is not None:
            return found
        url = self._node_urls[hostname]
        with translate_errors():
            import docker

            found = docker.APIClient(base_url=url, timeout=120)
        with self._lock:
            self._node_clients[hostname] = found
        return found

    # -- networks ------------------------------------------------------------------------
    def create_network(self, name: str, labels: dict[str, str], *,
                       internal: bool = False) -> None:
        if self._find_network(name) is not None:
            return
        all_labels = {MANAGED_LABEL: "true", **self._labels, **labels}
        with contextlib.suppress(ResourceInUse), translate_errors(name=name):
            self._api.create_network(name, driver="overlay", attachable=True, internal=internal,
                                     labels=all_labels, check_duplicate=True, scope="swarm")

    def remove_network(self, name: str) -> None:
        network = self._find_network(name)
        if network is None:
            return
        if (network.get("Labels") or {}).get(MANAGED_LABEL) != "true":
            raise ResourceInUse(f"network {name} was not created by Shipyard; not removing it")
        with translate_errors(name=name):
            users = [svc for svc in self._api.services() if any(
                target.get("Target") in {network["Id"], name}
                for target in ((svc.get("Spec") or {}).get("TaskTemplate") or {}).get(
                    "Networks") or [])]
        if users:
            raise ResourceInUse(f"network {name} is in use by {container_of(users[0])}")
        deadline = time.monotonic() + 10
        while True:
            try:
                with translate_errors(name=name):
                    self._api.remove_network(network["Id"])
                return
            except ResourceNotFound:
                return
            except (ResourceInUse, RuntimeUnavailable):
                # A removed service's tasks leave the network a moment after the service.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _find_network(self, name: str) -> dict[str, Any] | None:
        with translate_errors(name=name):
            found = self._api.networks(names=[name])
        return next((n for n in found if n.get("Name") == name), None)

    # -- containers ----------------------------------------------------------------------
    def start(self, spec: ContainerSpec) -> None:
        check_reference(spec.image)
        binds: list[Mount] = []
        shipped: list[Shipped] = []
        for mount in spec.mounts:
            check_mount_source(mount.source)
            if self._shared_path(mount.source) and not mount.fetch:
                binds.append(mount)
            elif self._shippable(mount.source):
                shipped.append(Shipped(len(shipped), volume_name(spec.name, len(shipped)),
                                       mount))
            else:
                self._refuse_unshared(mount.source)
        if self._find_service(spec.name) is not None:
            raise ResourceInUse(f"{spec.name} is in use: a service of that name exists")
        reference = self._images.reference(spec.image)
        if shipped:
            self._images.reference(self._stager_image)

        def make(node_id: str) -> None:
            if not shipped:
                self._create(spec, reference, binds, [f"node.id=={node_id}"])
                return
            self._ships.stage(spec, reference, binds, shipped, node_id)

        self._placement.place(spec, make)

    def _create(self, spec: ContainerSpec, reference: str, binds: list[Mount],
                constraints: list[str], *, helper: tuple[str, str] | None = None,
                shipped: list[Shipped] | tuple[Shipped, ...] = ()) -> None:
        """Make the one-task service standing for ``spec`` (or, with ``helper``, the step
        ``helper[0]`` of the container ``helper[1]``), its ``shipped`` mounts as volumes."""
        with translate_errors(image=spec.image, name=spec.name):
            import docker.types

            image_labels = (self._api.inspect_image(spec.image).get("Config") or {}).get(
                "Labels")
            capabilities = self._confinement.capabilities_for(
                spec.image, (image_labels or {}).get(CAPABILITIES_LABEL, ""))
            labels = {MANAGED_LABEL: "true", **self._labels, **spec.labels,
                      CONTAINER_NAME_LABEL: spec.name}
            if helper is not None:
                labels.update({HELPER_LABEL: helper[0], CONTAINER_NAME_LABEL: helper[1]})
            elif shipped:
                labels[SHIPPED_LABEL] = json.dumps([item.to_json() for item in shipped])
            volume_labels = {MANAGED_LABEL: "true", **self._labels,
                             CONTAINER_NAME_LABEL: helper[1] if helper else spec.name}
            mounts = [docker.types.Mount(m.target, m.source, type="bind",
                                         read_only=m.read_only) for m in binds]
            mounts += [docker.types.Mount(
                item.stage_path if helper else item.mount.target, item.volume, type="volume",
                read_only=bool(item.mount.read_only and not helper), no_copy=True,
                labels=volume_labels) for item in shipped]
            container = docker.types.ContainerSpec(
                reference, command=spec.entrypoint, args=spec.command,
                hostname=spec.hostname, env=spec.env, labels=labels, mounts=mounts,
                stop_grace_period=self._grace_ns, cap_drop=["ALL"], cap_add=capabilities,
                init=False)
            nano_cpus = int(spec.cpus * 1e9) if spec.cpus else None
            cpu_reservation, mem_reservation = self._placement.reservations(spec)
            resources = docker.types.Resources(
                cpu_limit=nano_cpus, mem_limit=spec.memory_bytes,
                cpu_reservation=cpu_reservation, mem_reservation=mem_reservation)
            resources.setdefault("Limits", {})["Pids"] = self._confinement.pids_limit
            networks: list[dict[str, Any]] = []
            if spec.network == "none":
                # A service cannot join a node's "none" network, and without a network it
                # lands on the node's default bridge, which reaches everything: it gets an
                # internal overlay of its own instead (no route out, no one else on it).
                isolated = isolated_network(spec.name)
                self.create_network(isolated, spec.labels, internal=True)
                networks = [{"Target": isolated}]
            elif spec.network:
                networks = [{"Target": spec.network, "Aliases": list(spec.network_aliases)}]
            template = docker.types.TaskTemplate(
                container, resources=resources,
                restart_policy=docker.types.RestartPolicy(condition="none"),
                placement=docker.types.Placement(constraints=constraints),
                networks=networks or None)
            endpoint = docker.types.EndpointSpec(mode="dnsrr", ports=[
                {"Protocol": "tcp", "TargetPort": port, "PublishMode": "host",
                 **({"PublishedPort": host} if host else {})}
                for port, host in spec.ports.items()] or None)
            self._api.create_service(
                template, name=service_name(spec.name), labels=labels,
                mode=docker.types.ServiceMode("replicated", replicas=1),
                endpoint_spec=endpoint)
        with self._lock:
            self._stopped.pop(spec.name, None)
        self._nodes = (0.0, [])

    def _shared_path(self, source: str) -> bool:
        real = Path(os.path.realpath(source))
        return any(real == root or root in real.parents for root in self._shared)

    def _shippable(self, source: str) -> bool:
        """A folder the platform made (under ``platform_root``), with a depot to ship it."""
        if self._depot is None or self._platform_root is None:
            return False
        real = Path(os.path.realpath(source))
        return self._platform_root in real.parents

    def _refuse_unshared(self, source: str) -> None:
        raise ValidationError(
            f"{source} is not on a path every node of the swarm shares, so a container on "
            "another node would not see it; put it under one of the shared paths "
            f"({', '.join(map(str, self._shared)) or 'none set'}: setting swarm_shared_paths, "
            "SHIPYARD_SWARM_SHARED_PATHS) or give the data as s3:// from a store every node "
            "reaches" + ("" if self._depot else
                         " (with the setting swarm_depot, SHIPYARD_SWARM_DEPOT)"))

    def shares_path(self, path: os.PathLike[str] | str) -> bool:
        return self._shared_path(os.fspath(path))

    def _find_service(self, name: str) -> dict[str, Any] | None:
        wanted = service_name(name)
        with translate_errors(name=name):
            found = self._api.services(filters={"name": wanted})
        return next((s for s in found if (s.get("Spec") or {}).get("Name") == wanted), None)

    def _task(self, service: dict[str, Any]) -> dict[str, Any] | None:
        """The service's latest task; None where it has none yet, or the service was removed
        since it was found (the manager answers 404 for the tasks of a service it no longer
        has: seen when an endpoint replaced an instance while another thread looked)."""
        try:
            with translate_errors():
                tasks: list[dict[str, Any]] = self._api.tasks(
                    filters={"service": service["ID"]})
        except ResourceNotFound:
            return None
        if not tasks:
            return None
        return max(tasks, key=lambda t: int((t.get("Version") or {}).get("Index", 0)))

    def inspect(self, name: str) -> ContainerState | None:
        service = self._find_service(name)
        if service is None:
            staging = (self._placement.held_state(name)
                       or self._ships.staging_state(name))
            if staging is not None:
                return staging
            # Made (and its stager removed) while this looked.
            service = self._find_service(name)
        if service is None:
            with self._lock:
                return self._stopped.get(name)
        task = self._task(service)
        if task is None:
            if self._find_service(name) is None:  # removed while this looked
                with self._lock:
                    return self._stopped.get(name)
            return ContainerState(name=name, running=True, waiting="no task yet")
        state = self._state_of(name, task)
        if not state.running:
            return self._ships.collected(name, service, task, state)
        return state

    def _state_of(self, name: str, task: dict[str, Any]) -> ContainerState:
        status = task.get("Status") or {}
        state = status.get("State", "")
        node = self._node(task.get("NodeID", ""))
        node_address = ((node or {}).get("Status") or {}).get("Addr", "")
        hostname = ((node or {}).get("Description") or {}).get("Hostname", task.get("NodeID", ""))
        if state in WAITING_STATES:
            return ContainerState(name=name, running=True,
                                  waiting=status.get("Err") or status.get("Message") or state)
        if node is not None and state == "running" and (
                (node.get("Status") or {}).get("State") == "down"):
            return ContainerState(
                name=name, running=False, exit_code=137, finished_at=time.time(),
                error=f"the node {hostname} ({node_address}) running it is down: its engine "
                      "stopped answering the swarm")
        ports = {int(p["TargetPort"]): int(p["PublishedPort"])
                 for p in (status.get("PortStatus") or {}).get("Ports") or []
                 if p.get("PublishedPort")}
        when = parse_docker_time(status.get("Timestamp"))
        if state == "running":
            return ContainerState(name=name, running=True, started_at=when, ports=ports,
                                  published_host=node_address, node=hostname)
        container = status.get("ContainerStatus") or {}
        code = container.get("ExitCode")
        error = status.get("Err") or ""
        if node is not None and (node.get("Status") or {}).get("State") != "ready":
            error = f"its node {hostname} ({node_address}) is down"
        if code is None or (code == 0 and state != "complete"):
            code = 137 if state in {"shutdown", "orphaned", "remove"} else 125
        oom_killed, started_at = self._node_facts(task)
        return ContainerState(name=name, running=False, exit_code=int(code),
                              oom_killed=oom_killed, started_at=started_at, finished_at=when,
                              error=error if state != "complete" else "", node=hostname)

    def _node(self, node_id: str) -> dict[str, Any] | None:
        if not node_id:
            return None
        for fresh in (False, True):
            found = next((n for n in self._raw_nodes(fresh) if n["ID"] == node_id), None)
            if found is not None:
                return found
        return None

    def _node_container(self, task: dict[str, Any]) -> tuple[Any, str] | None:
        """The task's node engine and container id, when the runtime knows that engine."""
        container_id = ((task.get("Status") or {}).get("ContainerStatus") or {}).get(
            "ContainerID")
        node = self._node(task.get("NodeID", ""))
        hostname = ((node or {}).get("Description") or {}).get("Hostname", "")
        if not container_id or hostname not in self._node_urls:
            return None
        return self._node_client(hostname), container_id

    def _node_facts(self, task: dict[str, Any]) -> tuple[bool, float | None]:
        """Whether the kernel killed the task's container for memory, and when it started,
        from its node's engine where the runtime knows it (the swarm keeps neither)."""
        found = self._node_container(task)
        if found is None:
            return False, None
        client, container_id = found
        try:
            with translate_errors():
                state = client.inspect_container(container_id).get("State") or {}
        except ShipyardError:
            return False, None
        return bool(state.get("OOMKilled")), parse_docker_time(state.get("StartedAt"))

    def wait(self, name: str, timeout: float) -> ContainerState | None:
        return wait_by_polling(self, name, timeout, _POLL_SECONDS)

    def logs(self, name: str, since_ns: int = 0, follow: bool = False) -> Iterator[LogLine]:
        """The task's output through the swarm's log broker (so from any node). Followed,
        the stream ends when the task exits: the swarm's own follow outlives the task."""
        service = self._find_service(name)
        if service is None:
            return
        last = since_ns
        while True:
            exited = self.inspect(name)
            done = exited is None or not exited.running
            for line in self._service_logs(service["ID"], last, follow and not done, name):
                last = max(last, line.timestamp_ns)
                yield line
            if not follow or done:
                return

    def _service_logs(self, service_id: str, since_ns: int, follow: bool,
                      name: str) -> Iterator[LogLine]:
        api = self._api
        with translate_errors(name=name):
            response = api._get(
                api._url("/services/{0}/logs", service_id),
                params={"stdout": 1, "stderr": 1, "timestamps": 1, "follow": int(follow),
                        "tail": "all", "since": int(since_ns // 1_000_000_000)},
                stream=True)
            api._raise_for_status(response)
            raw = api._get_raw_response_socket(response) if follow else None
            if raw is not None:
                api._disable_socket_timeout(raw)
        # Over a unix socket that is a SocketIO wrapping the socket.
        sock = getattr(raw, "_sock", raw)
        stop = threading.Event()
        closing = threading.Lock()
        if sock is not None:
            # End the stream soon after the task has exited (a replicated service's stream
            # outlives its task): what had not come by then, logs() reads once more without
            # following. Shutting the socket down is what wakes a read blocked on it.
            def watch() -> None:
                while not stop.wait(_POLL_SECONDS):
                    state = self.inspect(name)
                    if state is None or not state.running:
                        stop.wait(_POLL_SECONDS)
                        with closing, contextlib.suppress(OSError):
                            if not stop.is_set():  # else the socket may serve another call
                                sock.shutdown(socket.SHUT_RDWR)
                        return

            threading.Thread(target=watch, daemon=True, name=f"swarm-logs-{name}").start()
        try:
            with translate_errors(name=name):
                yield from parse_log_stream(frames(body_blocks(response)), since_ns)
        except (RuntimeUnavailable, OSError, ValueError, AttributeError) as exc:
            if not follow or (not stop.is_set() and self._still_running(name)):
                if isinstance(exc, ShipyardError):
                    raise
                # A read the manager never answers (its node lost) ends in a socket timeout.
                raise RuntimeUnavailable(f"the log of {name} could not be read: {exc}"
                                         ) from exc
        finally:
            with closing:
                stop.set()
            with contextlib.suppress(Exception):
                response.close()

    def _still_running(self, name: str) -> bool:
        state = self.inspect(name)
        return state is not None and state.running

    def signal(self, name: str, signum: int) -> None:
        with self._lock:
            held = self._placement.held.pop(name, None)
            if held is not None:
                self._stopped[name] = ContainerState(
                    name=name, running=False, exit_code=128 + int(signum),
                    finished_at=time.time(), error="stopped before a node had room for it")
                return
        service = self._find_service(name)
        if service is None:
            stage = self._find_service(helper_name(name, "stage"))
            if stage is not None:
                self._ships.cancel(name)
                with self._lock:
                    self._stopped[name] = ContainerState(
                        name=name, running=False, exit_code=128 + int(signum),
                        finished_at=time.time(), error="stopped while its data was staged")
                self._remove_service(stage, name)
            return
        task = self._task(service)
        if task is None or (task.get("Status") or {}).get("State") in EXITED_STATES:
            return
        found = self._node_container(task)
        if found is not None:
            client, container_id = found
            with contextlib.suppress(ResourceInUse, ResourceNotFound, RuntimeUnavailable), \
                    translate_errors(name=name):
                client.kill(container_id, signal=int(signum))
            return
        # No way to a remote container's process but through its service: removing it makes
        # the swarm send SIGTERM and kill after the stop grace period.
        with self._lock:
            self._stopped[name] = ContainerState(
                name=name, running=False, exit_code=128 + int(signum), finished_at=time.time(),
                error="stopped: its service was removed")
        self._remove_service(service, name)

    def stats(self, name: str) -> ContainerStats | None:
        service = self._find_service(name)
        task = self._task(service) if service is not None else None
        found = self._node_container(task) if task is not None else None
        if found is None:
            return None
        client, container_id = found
        try:
            with translate_errors(name=name):
                raw = client.stats(container_id, stream=False, one_shot=True)
        except ShipyardError:
            return None
        return stats_from(raw)

    def remove(self, name: str) -> None:
        self._ships.cancel(name)
        with self._lock:
            self._stopped.pop(name, None)
            self._placement.held.pop(name, None)
        service = self._find_service(name)
        with translate_errors(name=name):
            helpers = [h for h in self._api.services(filters={
                "label": f"{CONTAINER_NAME_LABEL}={name}"})
                if ((h.get("Spec") or {}).get("Labels") or {}).get(HELPER_LABEL)]
        if service is None and not helpers:
            return
        if service is not None and ((service.get("Spec") or {}).get("Labels") or {}).get(
                MANAGED_LABEL) != "true":
            raise ResourceInUse(f"service {name} was not created by Shipyard; not removing it")
        shipped = shipped_of(service) if service is not None else ()
        node_id = ""
        for found in ([service] if service is not None else []) + helpers:
            task = self._task(found)
            node_id = node_id or str((task or {}).get("NodeID") or "")
        if service is not None:
            self._remove_service(service, name)
        for helper in helpers:
            self._remove_service(helper, name)
        if shipped or helpers:
            self._ships.release(name, node_id, shipped)
        try:
            self.remove_network(isolated_network(name))
        except ShipyardError as exc:
            log.warning("could not remove the network of %s: %s", name, exc)

    def _remove_service(self, service: dict[str, Any], name: str) -> None:
        with contextlib.suppress(ResourceNotFound), translate_errors(name=name):
            self._api.remove_service(service["ID"])
        # A task removed while its node was still preparing it can start after all; where
        # the node's engine is known, make sure nothing of the service is left there.
        wanted = (service.get("Spec") or {}).get("Name", "")
        for hostname in self._node_urls:
            try:
                client = self._node_client(hostname)
                with translate_errors(name=name):
                    for left in client.containers(all=True, filters={
                            "label": f"{SERVICE_NAME_LABEL}={wanted}"}):
                        with contextlib.suppress(ShipyardError):
                            client.remove_container(left["Id"], force=True, v=True)
            except ShipyardError as exc:
                log.debug("could not check node %s for leftovers of %s: %s", hostname, name,
                          exc)
        self._nodes = (0.0, [])

    def list(self, labels: dict[str, str]) -> list[str]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with translate_errors():
            found = self._api.services(filters=filters)
        # A container whose stager runs has only its helper's service yet; a held one,
        # no service at all.
        names = {container_of(s) for s in found}
        with self._lock:
            for name, held in self._placement.held.items():
                carried = {MANAGED_LABEL: "true", **self._labels, **held.spec.labels}
                if all(carried.get(k) == v for k, v in labels.items()):
                    names.add(name)
        return sorted(names)

