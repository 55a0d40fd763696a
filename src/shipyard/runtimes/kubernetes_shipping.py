"""Shipped mounts on Kubernetes (``runtimes.shipping``): a pod's own volumes, filled and
returned by the stager in the pod itself.

Each shipped mount is an ``emptyDir`` volume of the pod. An init container (``stage``) fills
them before the container starts: the mount's ``s3://`` objects straight from the store, the
platform's folder from the depot. A second container (``collect``, only where a mount is
writable) waits beside it for the collect manifest; the platform writes it once the
container has ended, the collector returns what the volumes hold, and the platform unpacks
it into the mounts' folders. Until then the container counts as running. Nothing stays on
the node: the volumes go with the pod. (A second pod cannot mount another pod's
``emptyDir``, and a ``hostPath`` is what restricted clusters refuse; hence the sidecar.)
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import RuntimeUnavailable, ShipyardError
from shipyard.runtimes.base import ContainerState, Mount
from shipyard.runtimes.shipping import (
    Collection,
    Depot,
    Shipped,
    collect_manifest,
    retrieve,
    stage_manifest,
    stager_command,
)
from shipyard.runtimes.stager import MANIFEST_ENV

if TYPE_CHECKING:
    from shipyard.runtimes.kubernetes import KubernetesRuntime

__all__ = ["COLLECT", "STAGE", "PodShipping", "shipped_of"]

log = logging.getLogger(__name__)

#: The annotation of a pod with shipped mounts: them, as JSON (found again after a restart).
SHIPPED_ANNOTATION = "org.shipyard.shipped"
#: The init container that fills the volumes, and the one that returns them.
STAGE = "stage"
COLLECT = "collect"
#: What the collector reserves: it sleeps until the end, then holds one part in memory
#: (``stager.PART_BYTES``, twice while it is cut off).
COLLECTOR_REQUESTS = {"cpu": "10m", "memory": "64Mi"}
COLLECTOR_LIMITS = {"memory": "384Mi"}
#: Lines of a failed stager's log quoted in the container's error.
STAGER_TAIL = 5
_POLL_SECONDS = 0.25


def shipped_of(pod: Any) -> tuple[Shipped, ...]:
    text = (pod.metadata.annotations or {}).get(SHIPPED_ANNOTATION)
    if not text:
        return ()
    return tuple(Shipped.from_json(item) for item in json.loads(text))


def _volume(index: int) -> str:
    return f"s{index}"


class PodShipping:
    """The shipped mounts of ``runtime``'s pods, through ``depot``."""

    def __init__(self, runtime: KubernetesRuntime, depot: Depot, platform_root: Path,
                 stager_image: str) -> None:
        self._rt = runtime
        self.depot = depot
        self._root = Path(os.path.realpath(platform_root))
        self.stager_image = stager_image
        self._lock = threading.Lock()
        #: Containers whose outputs are being returned now, or have been.
        self._collections: dict[str, Collection] = {}

    def shippable(self, mount: Mount) -> bool:
        """A folder the platform made (under its data directory), or one with objects a node
        fetches itself."""
        return bool(mount.fetch) or self._root in Path(os.path.realpath(mount.source)).parents

    @staticmethod
    def prefix(pod_name: str) -> str:
        return pod_name

    def prepare(self, pod_name: str, shipped: Sequence[Shipped]) -> tuple[str, str]:
        """Put what the stager needs in the depot: the URLs of the stage manifest and of the
        collect manifest to wait for (written when the container has ended)."""
        prefix = self.prefix(pod_name)
        self.depot.remove(prefix)  # nothing of an earlier pod of that name
        return (stage_manifest(self.depot, prefix, shipped),
                self.depot.url(f"{prefix}/collect.json"))

    def pod_parts(self, shipped: Sequence[Shipped], urls: tuple[str, str],
                  main: Any) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        """The volumes, the main container's mounts of them, the init containers and the
        sidecars of a pod whose container ``main`` (a client model) has ``shipped``
        mounts."""
        client = self._rt._client
        volumes = [client.V1Volume(name=_volume(i.index),
                                   empty_dir=client.V1EmptyDirVolumeSource())
                   for i in shipped]
        mounts = [client.V1VolumeMount(name=_volume(i.index), mount_path=i.mount.target,
                                       read_only=i.mount.read_only) for i in shipped]

        def helper(name: str, step: str, url: str, items: Sequence[Shipped],
                   resources: Any) -> Any:
            return client.V1Container(
                name=name, image=self.stager_image,
                image_pull_policy=main.image_pull_policy, command=stager_command(step),
                env=[client.V1EnvVar(name=MANIFEST_ENV, value=url)], resources=resources,
                volume_mounts=[client.V1VolumeMount(name=_volume(i.index),
                                                    mount_path=i.stage_path)
                               for i in items],
                security_context=main.security_context)

        # The stager runs before the container, so it may use the CPUs and memory the
        # container reserves (not its GPUs: it needs none).
        reserved = main.resources
        stage = helper(STAGE, "stage", urls[0], shipped, client.V1ResourceRequirements(
            requests=reserved.requests, limits={
                k: v for k, v in (reserved.limits or {}).items() if k in ("cpu", "memory")
            } or None))
        writable = [i for i in shipped if not i.mount.read_only]
        collectors = [helper(COLLECT, "await-collect", urls[1], writable,
                             client.V1ResourceRequirements(requests=COLLECTOR_REQUESTS,
                                                           limits=COLLECTOR_LIMITS))
                      ] if writable else []
        return volumes, mounts, [stage], collectors

    # -- states ----------------------------------------------------------------------------
    def stage_failure(self, name: str, pod: Any) -> ContainerState | None:
        """The container's end where its stager failed (it never started)."""
        for status in pod.status.init_container_statuses or []:
            ended = status.state.terminated if status.state else None
            if status.name == STAGE and ended is not None and ended.exit_code != 0:
                node = pod.spec.node_name or ""
                tail = self._tail(pod, STAGE)
                return ContainerState(
                    name=name, running=False, exit_code=None, finished_at=time.time(),
                    node=node, error=f"staging its data on node {node} failed (exit code "
                    f"{ended.exit_code}): {' | '.join(tail) or ended.reason or 'no output'}")
        return None

    def collected(self, name: str, pod: Any, state: ContainerState) -> ContainerState:
        """An ended container with writable shipped mounts is still running to the platform
        until its collector has returned what it wrote (on a thread of its own)."""
        shipped = shipped_of(pod)
        if not any(not item.mount.read_only for item in shipped):
            return state
        with self._lock:
            collection = self._collections.get(name)
            if collection is None:
                collection = self._collections[name] = Collection(
                    lambda: self._collect(name, pod.metadata.name, shipped),
                    "kubernetes-collect")
        return collection.state(state)

    def returning(self, name: str) -> bool:
        """Whether what ``name`` wrote is being unpacked now (its pod may be gone)."""
        with self._lock:
            collection = self._collections.get(name)
        return collection is not None and collection.thread.is_alive()

    def _collect(self, name: str, pod_name: str, shipped: tuple[Shipped, ...]) -> None:
        """Tell the collector to return the volumes, wait for it, unpack what it sent."""
        prefix = self.prefix(pod_name)
        # Nothing to empty: the volumes go with the pod.
        collect_manifest(self.depot, prefix, shipped, empty=False)
        while True:
            pod = self._rt._pod(pod_name)
            if pod is None:
                raise RuntimeUnavailable("its pod was deleted before the collector was done")
            status = next((c for c in pod.status.container_statuses or []
                           if c.name == COLLECT), None)
            ended = status.state.terminated if status and status.state else None
            if ended is not None:
                break
            time.sleep(_POLL_SECONDS)
        if ended.exit_code != 0:
            tail = self._tail(pod, COLLECT)
            raise RuntimeUnavailable(
                f"the collector failed (exit code {ended.exit_code}): "
                + (" | ".join(tail) or ended.reason or "it printed nothing"))
        retrieve(self.depot, prefix, shipped)

    def _tail(self, pod: Any, container: str) -> list[str]:
        try:
            text = self._rt._core.read_namespaced_pod_log(
                pod.metadata.name, self._rt.namespace, container=container,
                tail_lines=STAGER_TAIL)
        except Exception:  # the log is a courtesy in an error that is raised anyway
            return []
        return [line for line in str(text).splitlines() if line.strip()]

    def release(self, name: str, pod_name: str) -> None:
        """What ``name`` leaves in the depot, once its pod is gone."""
        with self._lock:
            self._collections.pop(name, None)
        try:
            self.depot.remove(self.prefix(pod_name))
        except ShipyardError as exc:
            log.warning("could not remove what %s left in the depot: %s", name, exc)

