"""Replica groups on Kubernetes: each group of interchangeable containers
(:attr:`ContainerSpec.group <shipyard.runtimes.base.ContainerSpec.group>`: the instances of
one production variant of one endpoint deployment) is a Deployment, and each container of it
one of the Deployment's pods, *claimed* for it.

The platform still starts, health-checks, routes to and retires instances one by one, as on
every runtime; the Deployment is what the cluster sees and keeps:

- ``start`` makes the Deployment (one replica) or scales it to the group's claimed pods plus
  one, then claims a pod it made and not yet claimed: the container's name and id go on
  the pod (annotation and label), so it is found, inspected and signalled as any pod.
- A pod that dies or is deleted by someone else is replaced by the Deployment at once; the
  platform, seeing the instance ended, starts a replacement, which claims that pod rather
  than scaling up. (A container restarted in place by the kubelet has ended too: the
  platform decides, and its pod is deleted when the instance is removed.)
- A pod the platform stops is deleted and the Deployment scaled down to the pods still
  claimed, the replacement its ReplicaSet may have made meanwhile deleted at once; at none,
  the Deployment goes, and with it what it made.
- Each pod has a readiness probe on ``/ping``, so the cluster's Endpoints of the network's
  Service list only pods that answer (the platform itself reaches each pod at its IP,
  needing no kube-proxy, and checks health as on every runtime).

A claimed pod's deletion cost is raised, so that where the cluster honours it (1.22+) a
scale-down takes an unclaimed pod first.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shipyard.contract.labels import HOST_LABEL
from shipyard.contract.serving import PING_PATH
from shipyard.errors import ResourceNotFound, RuntimeUnavailable
from shipyard.runtimes.base import ContainerSpec
from shipyard.runtimes.kubernetes_errors import translate_errors
from shipyard.runtimes.kubernetes_names import (
    ID_LABEL,
    NAME_ANNOTATION,
    container_id,
    kubernetes_name,
    label_value,
)

if TYPE_CHECKING:
    from shipyard.runtimes.kubernetes import KubernetesRuntime

__all__ = ["GROUP_ANNOTATION", "GROUP_LABEL", "ReplicaGroups"]

#: A digest of the group's name, the Deployment's selector.
GROUP_LABEL = "org.shipyard.replica-group"
#: The Deployment of a pod (its name), on each pod it makes.
GROUP_ANNOTATION = "org.shipyard.replica-group"
#: ReplicaSets remove pods of a lower cost first when they scale down (1.22+).
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
#: How long a Deployment may take to make the pod a container claims.
CLAIM_SECONDS = 60.0
_POLL_SECONDS = 0.1


class ReplicaGroups:
    """The Deployments of ``runtime``'s replica groups."""

    def __init__(self, runtime: KubernetesRuntime) -> None:
        self._rt = runtime
        self._apps: Any = runtime._client.AppsV1Api(runtime._api_client)
        #: Claims and scaling are read-then-write: one at a time in this process.
        self._lock = threading.Lock()

    # -- making --------------------------------------------------------------------------
    def start(self, spec: ContainerSpec, make_pod: Callable[[], Any]) -> None:
        """Give ``spec`` (of the group ``spec.group``) a pod of its group's Deployment, made
        where missing from ``make_pod()`` (the pod the container would have on its own)."""
        assert spec.group is not None
        deployment = kubernetes_name(spec.group)
        group = container_id(spec.group)
        with self._lock:
            found = self._read(deployment)
            if found is None:
                self._create(deployment, spec, group, make_pod())
            else:
                wanted = len(self._claimed(group)) + 1
                if wanted > int(found.spec.replicas or 0):
                    self._scale(deployment, wanted)
            self._claim(deployment, group, spec)

    def _create(self, deployment: str, spec: ContainerSpec, group: str, pod: Any) -> None:
        client = self._rt._client
        labels = {k: v for k, v in pod.metadata.labels.items()
                  if k not in (ID_LABEL, HOST_LABEL)}
        labels[GROUP_LABEL] = group
        pod.metadata.labels = labels
        pod.metadata.name = None
        pod.metadata.annotations = {**pod.metadata.annotations,
                                    NAME_ANNOTATION: str(spec.group),
                                    GROUP_ANNOTATION: deployment}
        pod.spec.restart_policy = "Always"  # a Deployment's pods must be
        main = pod.spec.containers[0]
        if main.ports:
            main.readiness_probe = client.V1Probe(
                http_get=client.V1HTTPGetAction(path=PING_PATH,
                                                port=main.ports[0].container_port),
                period_seconds=2, timeout_seconds=2, failure_threshold=1)
        body = client.V1Deployment(
            metadata=self._rt._meta(deployment, str(spec.group), labels),
            spec=client.V1DeploymentSpec(
                replicas=1, selector=client.V1LabelSelector(match_labels={GROUP_LABEL: group}),
                template=client.V1PodTemplateSpec(metadata=pod.metadata, spec=pod.spec)))
        with translate_errors(name=f"deployment {deployment}"):
            self._apps.create_namespaced_deployment(self._rt.namespace, body)

    def _claim(self, deployment: str, group: str, spec: ContainerSpec) -> None:
        """Claim a pod of ``group`` that nobody has for ``spec``, once the Deployment has
        made one."""
        deadline = time.monotonic() + CLAIM_SECONDS
        while True:
            free = [p for p in self._pods(group) if ID_LABEL not in (p.metadata.labels or {})
                    and p.metadata.deletion_timestamp is None]
            if free:
                oldest = min(free, key=lambda p: p.metadata.creation_timestamp)
                patch = {"metadata": {
                    "labels": {ID_LABEL: container_id(spec.name),
                               **{k: label_value(v) for k, v in spec.labels.items()}},
                    "annotations": {NAME_ANNOTATION: spec.name, DELETION_COST: "1000"}}}
                with translate_errors(name=spec.name):
                    self._rt._core.patch_namespaced_pod(oldest.metadata.name,
                                                        self._rt.namespace, patch)
                return
            if time.monotonic() > deadline:
                raise RuntimeUnavailable(
                    f"Deployment {deployment} made no pod for {spec.name} in "
                    f"{CLAIM_SECONDS:.0f} s: {self._conditions(deployment) or 'no reason given'}")
            time.sleep(_POLL_SECONDS)

    # -- ending --------------------------------------------------------------------------
    def stopped(self, pod: Any) -> None:
        """After the platform deleted ``pod`` (a claimed one): scale its Deployment down to
        the pods still claimed; remove it when none is."""
        group = (pod.metadata.labels or {}).get(GROUP_LABEL)
        deployment = (pod.metadata.annotations or {}).get(GROUP_ANNOTATION)
        if not group or not deployment:
            return
        with self._lock:
            claimed = len(self._claimed(group))
            if claimed:
                self._scale(deployment, claimed)
                self._sweep(group)
            else:
                self.remove(deployment, group)

    def remove(self, deployment: str, group: str) -> None:
        """The Deployment ``deployment`` of ``group`` with its ReplicaSets and pods: scaled
        to none first, then deleted in the foreground, so that no ReplicaSet makes a pod
        while the garbage collector removes it (on 1.20, a background delete once left a pod
        of a retired fleet behind). The pods no container has are swept before and after
        the delete (:meth:`_sweep`)."""
        options = self._rt._client.V1DeleteOptions(propagation_policy="Foreground")
        try:
            self._scale(deployment, 0)
            self._sweep(group)
            with translate_errors(name=f"deployment {deployment}"):
                self._apps.delete_namespaced_deployment(
                    deployment, self._rt.namespace, body=options, _preload_content=False)
        except ResourceNotFound:
            return
        self._sweep(group)
        self._rt.forget_group(deployment)

    def _sweep(self, group: str) -> None:
        """Delete at once (grace 0) the pods of ``group`` that no container has: they serve
        nothing. The platform deletes a claimed pod before it scales the Deployment down
        (1.20 honours no deletion cost, so scaling first may take another instance's pod), and
        in between the ReplicaSet makes a replacement that the scale-down then deletes with
        the template's grace; on a loaded node such a pod, deleted while still being made,
        was seen to stay Terminating for over a minute, holding up the Deployment's
        foreground delete. A deletion with grace 0 shortens one already under way."""
        options = self._rt._client.V1DeleteOptions(grace_period_seconds=0)
        for pod in self._pods(group):
            if ID_LABEL in (pod.metadata.labels or {}):
                continue
            with contextlib.suppress(ResourceNotFound), translate_errors(name=pod.metadata.name):
                self._rt._core.delete_namespaced_pod(pod.metadata.name, self._rt.namespace,
                                                     body=options, _preload_content=False)

    def of_network(self, network_label: str, service: str) -> list[tuple[str, str]]:
        """The Deployments whose pods are on the network ``service``, with their groups."""
        with translate_errors():
            found = self._apps.list_namespaced_deployment(
                self._rt.namespace, label_selector=f"{network_label}={service}").items
        return [(d.metadata.name, (d.spec.selector.match_labels or {}).get(GROUP_LABEL, ""))
                for d in found]

    # -- reading -------------------------------------------------------------------------
    def _read(self, deployment: str) -> Any:
        try:
            with translate_errors(name=f"deployment {deployment}"):
                return self._apps.read_namespaced_deployment(deployment, self._rt.namespace)
        except ResourceNotFound:
            return None

    def _pods(self, group: str) -> list[Any]:
        with translate_errors():
            return list(self._rt._core.list_namespaced_pod(
                self._rt.namespace, label_selector=f"{GROUP_LABEL}={group}").items)

    def _claimed(self, group: str) -> list[Any]:
        """The pods of ``group`` a container has, not being deleted."""
        return [p for p in self._pods(group) if ID_LABEL in (p.metadata.labels or {})
                and p.metadata.deletion_timestamp is None]

    def _scale(self, deployment: str, replicas: int) -> None:
        with translate_errors(name=f"deployment {deployment}"):
            self._apps.patch_namespaced_deployment_scale(
                deployment, self._rt.namespace, {"spec": {"replicas": replicas}})

    def _conditions(self, deployment: str) -> str:
        found = self._read(deployment)
        if found is None:
            return "the Deployment is gone"
        return "; ".join(f"{c.type}: {c.message}" for c in found.status.conditions or []
                         if c.message)
