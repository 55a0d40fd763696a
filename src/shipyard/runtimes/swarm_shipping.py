"""Shipped mounts on a swarm (``runtimes.shipping``): the stage, collect and clean helper
services the swarm runtime runs on a container's node, and the state between them.

A container with shipped mounts has no service of its own until its stager is done: then it
is made on the stager's node. Once it ends it counts as running until a collector has
returned what it wrote. Its volumes go with it (through the node's engine where the runtime
knows it, else emptied by a clean helper).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.contract.labels import CONTAINER_NAME_LABEL
from shipyard.errors import ResourceNotFound, RuntimeUnavailable, ShipyardError
from shipyard.runtimes.base import ContainerSpec, ContainerState, LogLine, Mount
from shipyard.runtimes.docker import translate_errors
from shipyard.runtimes.shipping import (
    Collection,
    Shipped,
    clean_manifest,
    collect_manifest,
    retrieve,
    stage_manifest,
    stager_command,
)
from shipyard.runtimes.stager import MANIFEST_ENV
from shipyard.runtimes.swarm_objects import helper_name, service_name, shipped_of

if TYPE_CHECKING:
    from shipyard.runtimes.swarm import SwarmRuntime

log = logging.getLogger(__name__)

#: How long a clean step may take before its volumes are left to the node's operator.
CLEAN_SECONDS = 60.0
#: Lines of a failed stager's log quoted in the container's error.
STAGER_TAIL = 5


@dataclass
class Staging:
    """A container waiting for its stager: what :meth:`SwarmRuntime._create` needs then."""

    spec: ContainerSpec
    reference: str
    binds: list[Mount]
    shipped: list[Shipped]


class NodeStaging:
    """The shipped mounts of the containers of ``runtime``."""

    def __init__(self, runtime: SwarmRuntime) -> None:
        self._rt = runtime
        self._lock = threading.Lock()
        #: Containers whose data a stager fills now: how to make each once it is done.
        self.staging: dict[str, Staging] = {}
        #: Containers whose outputs a collector returns now, or has returned.
        self.collections: dict[str, Collection] = {}

    def cancel(self, name: str) -> None:
        """Forget ``name``'s stager (stopped or removed before it started)."""
        with self._lock:
            self.staging.pop(name, None)

    def release(self, name: str, node_id: str, shipped: tuple[Shipped, ...]) -> None:
        """What ``name`` leaves once its services are gone: its volumes on the node
        ``node_id`` and its objects in the depot."""
        with self._lock:
            collection = self.collections.pop(name, None)
        depot = self._rt._depot
        if depot is None:
            return
        returned = collection is not None and not collection.error and not (
            collection.thread.is_alive())
        self.drop_volumes(name, node_id, shipped, emptied=returned)
        try:
            depot.remove(service_name(name))
        except ShipyardError as exc:
            log.warning("could not remove what %s left in the depot: %s", name, exc)

    def stage(self, spec: ContainerSpec, reference: str, binds: list[Mount],
               shipped: list[Shipped], node_id: str) -> None:
        """Start the stager of ``spec`` on the node ``node_id``; the container itself is
        made there once it is done (:meth:`_staging_state`)."""
        assert self._rt._depot is not None
        manifest = stage_manifest(self._rt._depot, service_name(spec.name), shipped)
        stager = dataclasses.replace(
            spec, name=helper_name(spec.name, "stage"), image=self._rt._stager_image,
            entrypoint=stager_command("stage"), command=None, env={MANIFEST_ENV: manifest},
            mounts=[], hostname=None, network=None, network_aliases=[], ports={},
            # It reserves nothing: the node was chosen with room for the container.
            cpus=None, memory_bytes=None)
        with self._lock:
            self.staging[spec.name] = Staging(spec, reference, binds, shipped)
        try:
            self._rt._create(stager, self._rt._images.reference(self._rt._stager_image), [],
                         [f"node.id=={node_id}"], helper=("stage", spec.name),
                         shipped=shipped)
        except BaseException:
            with self._lock:
                self.staging.pop(spec.name, None)
            raise

    def staging_state(self, name: str) -> ContainerState | None:
        """The state of a container whose stager runs or ran (it has no service yet); makes
        the container on the stager's node once the stager is done. None: no stager."""
        stage = self._rt._find_service(helper_name(name, "stage"))
        if stage is None:
            return None
        task = self._rt._task(stage)
        with self._lock:
            pending = self.staging.get(name)
        if pending is None:
            if self._rt._find_service(name) is not None:  # made meanwhile by another caller
                return self._rt.inspect(name)
            return ContainerState(
                name=name, running=False, exit_code=None, finished_at=time.time(),
                error="its data was being staged on its node when the control plane "
                      "restarted, and it never started")
        if task is None:
            return ContainerState(name=name, running=True, waiting="no task yet")
        state = self._rt._state_of(name, task)
        if state.running:
            return dataclasses.replace(
                state, waiting=state.waiting if state.waiting and not state.node else
                f"staging its data on node {state.node}" if state.node else state.waiting)
        if state.exit_code != 0:
            with self._lock:
                self.staging.pop(name, None)
            tail = [line.text for line in self._tail(stage["ID"], name)]
            return dataclasses.replace(
                state, exit_code=None, error=f"staging its data on node {state.node} failed"
                f"{': ' + state.error if state.error else ''}: "
                + (" | ".join(tail) or "the stager printed nothing"))
        with self._rt._placement.making:
            if self._rt._find_service(name) is None:
                self._rt._create(pending.spec, pending.reference, pending.binds,
                             [f"node.id=={task['NodeID']}"], shipped=pending.shipped)
            with self._lock:
                self.staging.pop(name, None)
        self._rt._remove_service(stage, name)  # its volumes stay, for the container
        return ContainerState(name=name, running=True, waiting="starting: its data is staged",
                              node=state.node)

    def _tail(self, service_id: str, name: str) -> list[LogLine]:
        try:
            lines = list(self._rt._service_logs(service_id, 0, False, name))
        except ShipyardError:
            return []
        return lines[-STAGER_TAIL:]

    def collected(self, name: str, service: dict[str, Any], task: dict[str, Any],
                   state: ContainerState) -> ContainerState:
        """An ended container with shipped writable mounts is still running to the platform
        until a collector has returned what it wrote (on a thread of its own)."""
        shipped = shipped_of(service)
        if not any(not item.mount.read_only for item in shipped):
            return state
        with self._lock:
            collection = self.collections.get(name)
            if collection is None:
                collection = self.collections[name] = Collection(
                    lambda: self.collect_outputs(name, str(task.get("NodeID") or ""), shipped),
                    "swarm-collect")
        return collection.state(state)

    def collect_outputs(self, name: str, node_id: str, shipped: tuple[Shipped, ...]) -> None:
        """Run (or, after a restart, find) the collector on the container's node, then
        unpack what it returned into the mounts' folders."""
        assert self._rt._depot is not None
        prefix = service_name(name)
        helper = helper_name(name, "collect")
        service = self._rt._find_service(helper)
        if service is None:
            if not node_id:
                raise RuntimeUnavailable("the swarm does not say which node it ran on")
            spec = ContainerSpec(
                name=helper, image=self._rt._stager_image, entrypoint=stager_command("collect"),
                env={MANIFEST_ENV: collect_manifest(self._rt._depot, prefix, shipped)})
            self._rt._create(spec, self._rt._images.reference(self._rt._stager_image), [],
                         [f"node.id=={node_id}"], helper=("collect", name), shipped=shipped)
            service = self._rt._find_service(helper)
        ended = self._rt.wait(helper, float("inf")) if service is not None else None
        if ended is None or ended.exit_code != 0:
            tail = [line.text for line in self._tail(service["ID"], helper)] if service else []
            raise RuntimeUnavailable(
                f"the collector failed{': ' + ended.error if ended and ended.error else ''}: "
                + (" | ".join(tail) or "it printed nothing"))
        retrieve(self._rt._depot, prefix, shipped)

    def drop_volumes(self, name: str, node_id: str, shipped: tuple[Shipped, ...], *,
                      emptied: bool) -> None:
        """Remove the container's volumes from its node where the runtime knows the node's
        engine; else have the stager empty them (the swarm cannot remove a node's volumes:
        empty ones are left, labelled, for ``docker volume prune`` there)."""
        node = self._rt._node(node_id)
        hostname = ((node or {}).get("Description") or {}).get("Hostname", "")
        if hostname in self._rt._node_urls:
            client = self._rt._node_client(hostname)
            deadline = time.monotonic() + 10
            try:
                with translate_errors(name=name):
                    volumes = (client.volumes(filters={
                        "label": f"{CONTAINER_NAME_LABEL}={name}"}) or {}).get("Volumes") or []
                for volume in volumes:
                    while True:
                        try:
                            with translate_errors(name=name):
                                client.remove_volume(volume["Name"], force=True)
                            break
                        except ResourceNotFound:
                            break
                        except ShipyardError:
                            # Its containers go a moment after their service.
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.2)
            except ShipyardError as exc:
                log.warning("could not remove the volumes of %s on %s: %s", name, hostname,
                            exc)
            return
        if emptied or not shipped or not node_id or self._rt._depot is None:
            return
        helper = helper_name(name, "clean")
        try:
            spec = ContainerSpec(
                name=helper, image=self._rt._stager_image, entrypoint=stager_command("clean"),
                env={MANIFEST_ENV: clean_manifest(self._rt._depot, service_name(name), shipped)})
            self._rt._create(spec, self._rt._images.reference(self._rt._stager_image), [],
                         [f"node.id=={node_id}"], helper=("clean", name), shipped=shipped)
            self._rt.wait(helper, CLEAN_SECONDS)
        except ShipyardError as exc:
            log.warning("could not empty the volumes of %s: %s", name, exc)
        finally:
            found = self._rt._find_service(helper)
            if found is not None:
                self._rt._remove_service(found, helper)
