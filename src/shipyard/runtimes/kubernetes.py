"""A Kubernetes cluster as a :class:`~shipyard.runtimes.base.Runtime` (docs/runtimes.md).

Driven by the official Python client (``kubernetes`` on PyPI, the extra
``shipyard[kubernetes]``), configured by a kubeconfig (``kubeconfig``, else ``$KUBECONFIG``
or ``~/.kube/config``; in-cluster config when Shipyard runs in a pod), in one namespace.

- **A container is a pod** (``restartPolicy: Never``): the platform, not the cluster,
  decides what a failure means. Not a ``batch/v1`` Job, though a host runs to completion:
  before pod failure policies (1.26), a Job replaces a pod that is deleted or evicted with a
  fresh one, whatever ``backoffLimit`` says, and a host would silently start again beside
  the hosts that already run (tried on 1.20: the endpoint instance whose pod was deleted
  came back at another address). Names follow Kubernetes' rules (lowercase, at most 63
  characters; a digest where the container's name had to change); the container's own name
  is the annotation ``org.shipyard.container`` and a digest of it the label
  ``org.shipyard.container-id``.
- **Confinement** as on one engine: not privileged, no privilege escalation, every capability
  dropped but :data:`~shipyard.runtimes.base.BASE_CAPABILITIES`, no service account token, no
  service links. (An image's label asking for more is not read: the image is the cluster's.)
- **Resources**: the instance type's CPUs and memory as limits, its memory and CPUs over the
  overcommit as requests; the cluster's scheduler places the pod, and a pod it cannot place
  stays ``Pending`` with its reason, reported as :attr:`ContainerState.waiting`.
- **Mounts** under ``shared_paths`` (paths every node has alike: an NFS export, or the
  node's own disk on a one-node cluster) are ``hostPath`` volumes. With a ``depot``, the
  platform's own folders and the mounts' ``s3://`` objects are *shipped*: the pod's own
  volumes, filled and returned by the stager in the pod (``runtimes.kubernetes_shipping``).
  Other paths are refused before anything is made.
- **Networks** are headless Services (the pods' ``subdomain``, and a DNS search so that a
  bare ``algo-2`` resolves); on a cluster without DNS (``cluster_dns=False``), a host's pod
  names the hosts started before it in ``hostAliases``. ``internal`` adds a
  NetworkPolicy that lets the network's pods reach only each other (enforced where the
  cluster's network plugin enforces policies); ``none`` one that denies everything.
- **Ports**: the platform reaches a serving pod at its own IP (no kube-proxy needed).
- **Logs** through the pod log API (``timestamps=true``); **signals**: SIGTERM deletes the
  pod with the grace period (the kubelet sends SIGTERM, then kills), SIGKILL deletes it at
  once; there is no other signal path. A pod deleted by anyone else has ended. Exit codes
  and ``OOMKilled`` come from the container's terminated state.

Every client error becomes a ``shipyard.errors`` one (:func:`translate_errors`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal as signals
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from shipyard.contract.labels import MANAGED_LABEL
from shipyard.errors import (
    ResourceInUse,
    ResourceNotFound,
    RuntimeUnavailable,
    ValidationError,
)
from shipyard.runtimes.base import (
    Capacity,
    Confinement,
    ContainerSpec,
    ContainerState,
    LogLine,
    Mount,
    Runtime,
    wait_by_polling,
)
from shipyard.runtimes.docker import _check_mount_source as check_mount_source
from shipyard.runtimes.docker import check_reference, parse_docker_time, parse_log_stream
from shipyard.runtimes.kubernetes_errors import translate_errors
from shipyard.runtimes.kubernetes_names import (
    GPU_RESOURCE,
    ID_LABEL,
    MAIN,
    NAME_ANNOTATION,
    NAME_PATTERN,
    NETWORK_LABEL,
    container_id,
    kubernetes_name,
    label_value,
)
from shipyard.runtimes.kubernetes_replicas import GROUP_LABEL, ReplicaGroups
from shipyard.runtimes.kubernetes_shipping import SHIPPED_ANNOTATION, PodShipping
from shipyard.runtimes.shipping import Depot, Shipped

__all__ = ["KubernetesRuntime", "kubernetes_name", "translate_errors"]

#: Waiting reasons of a container that will never start by itself.
_STUCK = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull",
                    "InvalidImageName", "CreateContainerConfigError", "CreateContainerError"})
_POLL_SECONDS = 0.25


class KubernetesRuntime(Runtime):
    """Containers as pods in ``namespace`` of the cluster ``kubeconfig`` names."""

    kind = "kubernetes"
    places_by_reservation = True
    shared_paths_setting = "kubernetes_shared_paths"

    def __init__(
        self, kubeconfig: str | None = None, *, namespace: str = "shipyard",
        labels: dict[str, str] | None = None, confinement: Confinement | None = None,
        shared_paths: tuple[Path, ...] = (), cpu_overcommit: float = 1.0,
        stop_grace_seconds: float = 120.0, image_pull_policy: str = "IfNotPresent",
        cluster_domain: str = "cluster.local", cluster_dns: bool = True,
        depot: Depot | None = None, platform_root: Path | None = None,
        stager_image: str = "shipyard/base:bookworm-py311",
    ) -> None:
        if image_pull_policy not in {"Always", "IfNotPresent", "Never"}:
            raise ValidationError(
                "setting kubernetes_image_pull_policy must be Always, IfNotPresent or Never")
        if not NAME_PATTERN.fullmatch(namespace):
            raise ValidationError(f"setting kubernetes_namespace: {namespace!r} is not a "
                                  "Kubernetes namespace name")
        with translate_errors():
            from kubernetes import client
            from kubernetes import config as typed_config
            from kubernetes.client.exceptions import ApiException

            config = cast(Any, typed_config)  # its loaders are not annotated

            if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") and not (
                    os.environ.get("KUBECONFIG")):
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api = client.ApiClient(configuration)
            else:
                api = config.new_client_from_config(config_file=kubeconfig)
        # The client's own annotations are looser than strict typing wants: held as Any.
        self._api_client: Any = api
        self._core: Any = client.CoreV1Api(api)
        self._networking: Any = client.NetworkingV1Api(api)
        self._client: Any = client
        self._api_error: Any = ApiException
        self.namespace = namespace
        self._labels = {k: label_value(v) for k, v in (labels or {}).items()}
        self._confinement = confinement or Confinement()
        self._shared = tuple(Path(os.path.realpath(p)) for p in shared_paths)
        self._overcommit = max(1.0, cpu_overcommit)
        self._grace = max(0, int(stop_grace_seconds))
        self._pull_policy = image_pull_policy
        self._domain = cluster_domain
        self._cluster_dns = cluster_dns
        self._ships = PodShipping(self, depot, platform_root, stager_image) if (
            depot is not None and platform_root is not None) else None
        self.stages_on_nodes = self._ships is not None
        self._groups = ReplicaGroups(self)
        self._lock = threading.Lock()
        #: Containers deleted to stop them: their last state once their pod is gone.
        self._stopped: dict[str, ContainerState] = {}

    # -- the cluster ---------------------------------------------------------------------
    def ping(self) -> None:
        """Raise ``RuntimeUnavailable`` unless the API answers; make the namespace if it is
        missing and wait (up to 30 s) for its default service account, without which the
        API refuses pods."""
        with translate_errors(name=f"namespace {self.namespace}"):
            try:
                self._core.read_namespace(self.namespace)
            except self._api_error as exc:
                if exc.status != 404:
                    raise
                with contextlib.suppress(self._api_error):
                    self._core.create_namespace(self._client.V1Namespace(
                        metadata=self._client.V1ObjectMeta(
                            name=self.namespace, labels={MANAGED_LABEL: "true"})))
            deadline = time.monotonic() + 30
            while not self._core.list_namespaced_service_account(
                    self.namespace, field_selector="metadata.name=default").items:
                if time.monotonic() > deadline:
                    raise RuntimeUnavailable(f"namespace {self.namespace} has no default "
                                             "service account; pods cannot be made there")
                time.sleep(0.2)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._api_client.close()

    def capacity(self) -> Capacity:
        """The largest schedulable node's allocatable CPUs and memory, and the most GPUs
        one node has (a GPU node need not be the largest)."""
        with translate_errors():
            nodes = self._core.list_node().items
        best = Capacity(0.0, 0, 0)
        gpus = 0
        for node in nodes:
            if node.spec.unschedulable:
                continue
            allocatable = node.status.allocatable or {}
            found = Capacity(_cpus(allocatable.get("cpu", "0")),
                             _bytes(allocatable.get("memory", "0")))
            gpus = max(gpus, int(_quantity(allocatable.get(GPU_RESOURCE, "0"))))
            if (found.memory_bytes, found.cpus) > (best.memory_bytes, best.cpus):
                best = found
        return dataclasses.replace(best, gpus=gpus)

    def shares_path(self, path: os.PathLike[str] | str) -> bool:
        real = Path(os.path.realpath(path))
        return any(real == root or root in real.parents for root in self._shared)

    # -- images --------------------------------------------------------------------------
    def check_reference(self, image: str) -> None:
        check_reference(image)

    def check_image(self, image: str) -> None:
        """Only the reference: whether a node can pull it is known when a pod starts (a pod
        that cannot is reported ended, with the kubelet's reason)."""
        check_reference(image)

    # -- networks ------------------------------------------------------------------------
    def create_network(self, name: str, labels: dict[str, str], *,
                       internal: bool = False) -> None:
        service = kubernetes_name(name)
        meta = self._meta(service, name, labels)
        body = self._client.V1Service(metadata=meta, spec=self._client.V1ServiceSpec(
            cluster_ip="None", selector={NETWORK_LABEL: service},
            publish_not_ready_addresses=True))
        with contextlib.suppress(ResourceInUse), translate_errors(name=f"network {name}"):
            self._core.create_namespaced_service(self.namespace, body)
        if internal:
            self._isolate(service, {NETWORK_LABEL: service}, peers=True, labels=labels)

    def _isolate(self, policy: str, selector: dict[str, str], *, peers: bool,
                 labels: dict[str, str]) -> None:
        """A NetworkPolicy: the pods ``selector`` picks reach only each other (``peers``),
        or nothing at all."""
        client = self._client
        peer = [client.V1NetworkPolicyPeer(pod_selector=client.V1LabelSelector(
            match_labels=selector))] if peers else None
        body = client.V1NetworkPolicy(
            metadata=self._meta(policy, policy, labels),
            spec=client.V1NetworkPolicySpec(
                pod_selector=client.V1LabelSelector(match_labels=selector),
                policy_types=["Ingress", "Egress"],
                ingress=[client.V1NetworkPolicyIngressRule(_from=peer)] if peers else [],
                egress=[client.V1NetworkPolicyEgressRule(to=peer)] if peers else []))
        with contextlib.suppress(ResourceInUse), translate_errors(name=f"policy {policy}"):
            self._networking.create_namespaced_network_policy(self.namespace, body)

    def remove_network(self, name: str) -> None:
        """The network's Service and policy, and the Deployments of replicas on it (one
        whose last pod ended by itself is still there)."""
        service = kubernetes_name(name)
        for deployment, group in self._groups.of_network(NETWORK_LABEL, service):
            self._groups.remove(deployment, group)
        with contextlib.suppress(ResourceNotFound), translate_errors(name=f"network {name}"):
            found = self._core.read_namespaced_service(service, self.namespace)
            if (found.metadata.labels or {}).get(MANAGED_LABEL) != "true":
                raise ResourceInUse(f"network {name} was not created by Shipyard; not "
                                    "removing it")
            self._core.delete_namespaced_service(service, self.namespace,
                                                 _preload_content=False)
        with contextlib.suppress(ResourceNotFound), translate_errors(name=f"policy {name}"):
            self._networking.delete_namespaced_network_policy(service, self.namespace,
                                                              _preload_content=False)

    # -- containers ----------------------------------------------------------------------
    def _meta(self, object_name: str | None, name: str, labels: dict[str, str]) -> Any:
        return self._client.V1ObjectMeta(
            name=object_name, annotations={NAME_ANNOTATION: name},
            labels={MANAGED_LABEL: "true", **self._labels,
                    **{k: label_value(v) for k, v in labels.items()}})

    def start(self, spec: ContainerSpec) -> None:
        if spec.group is not None:
            # One of a group of replicas: a pod of the group's Deployment (made from this
            # container's pod where it is the first).
            self._groups.start(spec, lambda: self._pod_to_make(
                spec, kubernetes_name(str(spec.group))))
        else:
            body = self._pod_to_make(spec, kubernetes_name(spec.name))
            if spec.network == "none":
                self._isolate(kubernetes_name(spec.name), {ID_LABEL: container_id(spec.name)},
                              peers=False, labels=spec.labels)
            with translate_errors(name=spec.name):
                self._core.create_namespaced_pod(self.namespace, body)
        with self._lock:
            self._stopped.pop(spec.name, None)

    def _pod_to_make(self, spec: ContainerSpec, prefix: str) -> Any:
        """``spec``'s pod, its shipped mounts' manifests put in the depot under ``prefix``
        and, on a cluster without DNS, its hosts before it named."""
        _, shipped = self._placement(spec)
        urls = None
        if shipped:
            assert self._ships is not None
            urls = self._ships.prepare(prefix, shipped)
        aliases: list[Any] = []
        if not self._cluster_dns and spec.hostname and spec.network not in (None, "none"):
            aliases = self._peer_aliases(kubernetes_name(str(spec.network)))
        return self.pod_manifest(spec, host_aliases=aliases, shipping_urls=urls)

    def forget_group(self, deployment: str) -> None:
        """What the group's Deployment ``deployment`` left in the depot, once it is gone."""
        if self._ships is not None:
            self._ships.release(deployment, deployment)

    def _peer_aliases(self, network: str) -> list[Any]:
        """Where the cluster has no DNS: ``hostAliases`` naming the pods already on
        ``network``, once each has its IP (up to a minute). A host then resolves the hosts
        started before it (algo-1 from every other, as a job's leader is reached)."""
        deadline = time.monotonic() + 60
        while True:
            with translate_errors(name=f"network {network}"):
                pods = self._core.list_namespaced_pod(
                    self.namespace, label_selector=f"{NETWORK_LABEL}={network}").items
            if all(p.status.pod_ip for p in pods) or time.monotonic() > deadline:
                return [self._client.V1HostAlias(ip=p.status.pod_ip,
                                                 hostnames=[p.spec.hostname])
                        for p in pods if p.status.pod_ip and p.spec.hostname]
            time.sleep(_POLL_SECONDS)

    def _placement(self, spec: ContainerSpec) -> tuple[list[Mount], list[Shipped]]:
        """``spec``'s mounts as ``hostPath`` volumes and as shipped ones; raises
        ``ValidationError`` for a path the nodes cannot see."""
        check_reference(spec.image)
        binds: list[Mount] = []
        shipped: list[Shipped] = []
        for mount in spec.mounts:
            check_mount_source(mount.source)
            if not mount.fetch and self.shares_path(mount.source):
                binds.append(mount)
            elif self._ships is not None and self._ships.shippable(mount):
                shipped.append(Shipped(len(shipped), f"s{len(shipped)}", mount))
            else:
                raise ValidationError(
                    f"{mount.source} is not on a path every node of the cluster shares; put "
                    "it under one of the shared paths "
                    f"({', '.join(map(str, self._shared)) or 'none set'}: setting "
                    "kubernetes_shared_paths, SHIPYARD_KUBERNETES_SHARED_PATHS) or give the "
                    "data as s3:// from a store every node reaches" + (
                        "" if self._ships else " (with the setting kubernetes_depot, "
                        "SHIPYARD_KUBERNETES_DEPOT)"))
        return binds, shipped

    def pod_manifest(self, spec: ContainerSpec, host_aliases: list[Any] | None = None,
                     shipping_urls: tuple[str, str] | None = None) -> Any:
        """The pod that runs ``spec`` (a client model; nothing is made), naming
        ``host_aliases`` in its ``/etc/hosts``; where mounts are shipped, its stager reads the
        ``shipping_urls`` (the stage manifest's, the collect manifest's to wait for). Raises
        ``ValidationError`` for what this cluster cannot give it."""
        binds, shipped = self._placement(spec)
        client = self._client
        pod_labels = {**spec.labels, ID_LABEL: container_id(spec.name)}
        if spec.network and spec.network != "none":
            pod_labels[NETWORK_LABEL] = kubernetes_name(spec.network)
        requests: dict[str, str] = {}
        limits: dict[str, str] = {}
        if spec.cpus:
            limits["cpu"] = f"{int(spec.cpus * 1000)}m"
            requests["cpu"] = f"{max(1, int(spec.cpus * 1000 / self._overcommit))}m"
        if spec.memory_bytes:
            limits["memory"] = requests["memory"] = str(int(spec.memory_bytes))
        if spec.gpus:
            # An extended resource: asked as a limit, the request is the same and whole.
            limits[GPU_RESOURCE] = str(spec.gpus)
        capabilities = self._confinement.capabilities_for(spec.image, "")
        volumes, volume_mounts = [], []
        for index, mount in enumerate(binds):
            volumes.append(client.V1Volume(
                name=f"m{index}",
                host_path=client.V1HostPathVolumeSource(path=os.path.realpath(mount.source))))
            volume_mounts.append(client.V1VolumeMount(name=f"m{index}", mount_path=mount.target,
                                                      read_only=mount.read_only))
        container = client.V1Container(
            name=MAIN, image=spec.image, image_pull_policy=self._pull_policy,
            command=spec.entrypoint, args=spec.command,
            env=[client.V1EnvVar(name=k, value=v) for k, v in spec.env.items()],
            resources=client.V1ResourceRequirements(requests=requests or None,
                                                    limits=limits or None),
            ports=[client.V1ContainerPort(container_port=p) for p in spec.ports] or None,
            volume_mounts=volume_mounts or None,
            security_context=client.V1SecurityContext(
                privileged=False, allow_privilege_escalation=False,
                capabilities=client.V1Capabilities(drop=["ALL"], add=capabilities)))
        annotations: dict[str, str] = {}
        containers: list[Any] = [container]
        init_containers: list[Any] = []
        if shipped:
            assert self._ships is not None and shipping_urls is not None
            more, mounts, init_containers, sidecars = self._ships.pod_parts(
                shipped, shipping_urls, container)
            volumes += more
            container.volume_mounts = volume_mounts + mounts
            containers += sidecars
            annotations[SHIPPED_ANNOTATION] = json.dumps([i.to_json() for i in shipped])
        network = pod_labels.get(NETWORK_LABEL)
        pod = client.V1PodSpec(
            restart_policy="Never", volumes=volumes or None, containers=containers,
            init_containers=init_containers or None,
            hostname=spec.hostname or None, subdomain=network,
            # Peers by their bare names (algo-2), as SageMaker's hosts know each other:
            # through the network's headless Service, in the cluster's DNS.
            dns_config=client.V1PodDNSConfig(searches=[
                f"{network}.{self.namespace}.svc.{self._domain}"]) if network else None,
            host_aliases=host_aliases or None,
            automount_service_account_token=False, enable_service_links=False,
            termination_grace_period_seconds=self._grace)
        meta = self._meta(kubernetes_name(spec.name), spec.name, pod_labels)
        meta.annotations.update(annotations)
        return client.V1Pod(metadata=meta, spec=pod)

    def _pods(self, name: str) -> list[Any]:
        with translate_errors(name=name):
            pods = self._core.list_namespaced_pod(
                self.namespace, label_selector=f"{ID_LABEL}={container_id(name)}").items
        return sorted(pods, key=lambda p: p.metadata.creation_timestamp)

    def _pod(self, pod_name: str) -> Any:
        """The pod ``pod_name``, or None."""
        with contextlib.suppress(ResourceNotFound), translate_errors(name=pod_name):
            return self._core.read_namespaced_pod(pod_name, self.namespace)
        return None

    def inspect(self, name: str) -> ContainerState | None:
        pods = self._pods(name)
        if not pods:
            if self._ships is not None and self._ships.returning(name):
                return ContainerState(name=name, running=True)
            with self._lock:
                return self._stopped.get(name)
        return self._state_of(name, pods[-1])

    def _state_of(self, name: str, pod: Any) -> ContainerState:
        status = pod.status
        node = pod.spec.node_name or ""
        main = next((c for c in status.container_statuses or [] if c.name == MAIN), None)
        state = main.state if main is not None else None
        if main is not None and main.restart_count and main.last_state is not None and (
                main.last_state.terminated is not None):
            # A Deployment's pod restarts its container in place: the container the
            # platform started has ended all the same.
            state = main.last_state
        ports = {p.container_port: p.container_port
                 for c in pod.spec.containers for p in c.ports or []}
        address = status.pod_ip or ""
        shipping = self._ships if SHIPPED_ANNOTATION in (pod.metadata.annotations or {}) else None
        if shipping is not None and (failed := shipping.stage_failure(name, pod)) is not None:
            return failed
        if state is not None and state.terminated is not None:
            ended = state.terminated
            over = ContainerState(
                name=name, running=False, exit_code=int(ended.exit_code),
                oom_killed=ended.reason == "OOMKilled",
                started_at=_epoch(ended.started_at), finished_at=_epoch(ended.finished_at),
                error="" if ended.reason in (None, "Completed") else (
                    f"{ended.reason}: {ended.message}" if ended.message else ended.reason),
                node=node)
            return over if shipping is None else shipping.collected(name, pod, over)
        if status.phase in ("Failed", "Succeeded"):
            # Ended without a container status of its own: evicted, or past a deadline.
            return ContainerState(name=name, running=False, exit_code=137,
                                  finished_at=time.time(), node=node,
                                  error=f"{status.reason or status.phase}: "
                                        f"{status.message or 'the pod ended'}")
        if status.phase == "Unknown":
            return ContainerState(
                name=name, running=False, exit_code=137, finished_at=time.time(), node=node,
                error=f"the node {node} running it stopped reporting to the cluster")
        if pod.metadata.deletion_timestamp is not None:
            with self._lock:
                ours = name in self._stopped
            if not ours:
                # Deleted by someone else (a drain, a person): over for the platform now,
                # so that nothing more is sent to it, whatever it still finishes.
                return ContainerState(
                    name=name, running=False, exit_code=137, finished_at=time.time(),
                    node=node, error=f"its pod was deleted (node {node or 'unknown'})")
        if state is not None and state.running is not None:
            return ContainerState(name=name, running=True,
                                  started_at=_epoch(state.running.started_at), ports=ports,
                                  address=address, published_host=address, node=node)
        waiting = state.waiting if state is not None else None
        if waiting is not None and waiting.reason in _STUCK:
            return ContainerState(
                name=name, running=False, exit_code=None, finished_at=time.time(), node=node,
                error=f"the node {node} cannot start image {pod.spec.containers[0].image}: "
                      f"{waiting.reason}: {waiting.message or ''}".rstrip(": "))
        for condition in status.conditions or []:
            if condition.type == "PodScheduled" and condition.status != "True":
                return ContainerState(name=name, running=True, waiting=(
                    f"{condition.reason or 'not scheduled'}: {condition.message or ''}"
                ).rstrip(": "))
        reason = waiting.reason if waiting is not None else status.phase
        return ContainerState(name=name, running=True, node=node,
                              waiting=str(reason or "Pending"))

    def wait(self, name: str, timeout: float) -> ContainerState | None:
        return wait_by_polling(self, name, timeout, _POLL_SECONDS)

    def logs(self, name: str, since_ns: int = 0, follow: bool = False) -> Iterator[LogLine]:
        """The pod's output from the API; followed, until its container ends."""
        while True:
            pods = self._pods(name)
            if pods and not self._state_of(name, pods[-1]).waiting:
                break  # it runs or ran: its log is there
            if not follow or not pods:
                return
            time.sleep(_POLL_SECONDS)
        pod = pods[-1].metadata.name
        with translate_errors(name=name):
            try:
                response = self._core.read_namespaced_pod_log(
                    pod, self.namespace, container=MAIN, follow=follow, timestamps=True,
                    _preload_content=False)
            except self._api_error as exc:
                if exc.status == 400:  # not started (never will: an image it cannot pull)
                    return
                raise
        try:
            with translate_errors(name=name):
                yield from parse_log_stream(response.stream(64 * 1024), since_ns)
        finally:
            response.release_conn()

    def signal(self, name: str, signum: int) -> None:
        pods = self._pods(name)
        if not pods or not self._state_of(name, pods[-1]).running:
            return
        grace = 0 if signum == signals.SIGKILL else self._grace
        with self._lock:
            self._stopped[name] = ContainerState(
                name=name, running=False, exit_code=128 + int(signum), finished_at=time.time(),
                error="stopped: its pod was deleted")
        self._delete(name, grace)
        self._groups.stopped(pods[-1])  # so that its Deployment does not replace it

    def _delete(self, name: str, grace: int) -> None:
        """Its pod, with ``grace``. (Not decoded: a 1.20 API server answers some deletes with
        a Status the client's models refuse.)"""
        options = self._client.V1DeleteOptions(grace_period_seconds=grace)
        for pod in self._pods(name):
            with contextlib.suppress(ResourceNotFound), translate_errors(name=name):
                self._core.delete_namespaced_pod(pod.metadata.name, self.namespace,
                                                 body=options, _preload_content=False)

    def remove(self, name: str) -> None:
        pods = self._pods(name)
        if not pods:
            with self._lock:
                self._stopped.pop(name, None)
            return
        pod = pods[-1]
        if (pod.metadata.labels or {}).get(MANAGED_LABEL) != "true":
            raise ResourceInUse(f"{name} was not created by Shipyard; not removing it")
        alive = self._state_of(name, pod).running
        self._delete(name, 0)
        with self._lock:
            stopped = self._stopped.pop(name, None) is not None
        if GROUP_LABEL in (pod.metadata.labels or {}):
            # A replica that ended by itself: its Deployment makes the pod that the
            # platform's replacement claims. One the platform stopped or removes alive:
            # scaled away.
            if stopped or alive:
                self._groups.stopped(pod)
            return
        with contextlib.suppress(ResourceNotFound), translate_errors(name=name):
            self._networking.delete_namespaced_network_policy(
                kubernetes_name(name), self.namespace, _preload_content=False)
        if self._ships is not None:
            self._ships.release(name, pod.metadata.name)

    def list(self, labels: dict[str, str]) -> list[str]:
        selector = ",".join(f"{k}={label_value(v)}" for k, v in labels.items())
        with translate_errors():
            pods = self._core.list_namespaced_pod(self.namespace,
                                                  label_selector=selector).items
        # A Deployment's pod no container has claimed yet is no container.
        return sorted({(p.metadata.annotations or {}).get(NAME_ANNOTATION, p.metadata.name)
                       for p in pods if ID_LABEL in (p.metadata.labels or {})})


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return parse_docker_time(str(value))


_QUANTITY = re.compile(r"^([0-9.]+)([A-Za-z]*)$")
_SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10,
             "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 10**-3}


def _quantity(text: str) -> float:
    match = _QUANTITY.match(str(text).strip())
    if match is None or match.group(2) not in _SUFFIXES:
        return 0.0
    return float(match.group(1)) * _SUFFIXES[match.group(2)]


def _cpus(text: str) -> float:
    return _quantity(text)


def _bytes(text: str) -> int:
    return int(_quantity(text))
