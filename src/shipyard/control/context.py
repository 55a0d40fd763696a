"""What every part of the control plane shares: settings, state, logs, runtime, storage."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shipyard.control.capacity import Ledger
from shipyard.control.confinement import FileRoots
from shipyard.control.s3 import S3Client
from shipyard.control.state.locks import JobLock
from shipyard.control.state.logs import LogStore
from shipyard.control.state.store import Store
from shipyard.runtimes.base import Runtime
from shipyard.settings import Settings

if TYPE_CHECKING:
    from shipyard.control.depot import S3Depot
    from shipyard.control.metrics.mlflow import MlflowForwarder


@dataclass
class Context:
    settings: Settings
    store: Store
    logs: LogStore
    runtime: Runtime
    _s3: S3Client | None = field(default=None, repr=False)
    _capacity: Ledger | None = field(default=None, repr=False)
    _forwarder: MlflowForwarder | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def build(cls, settings: Settings, runtime: Runtime) -> Context:
        data = settings.data_dir
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        # It holds the key pair, environment values and logs: the owner's alone, even when
        # an older version made it with the umask's mode.
        with contextlib.suppress(OSError):
            data.chmod(0o700)
        return cls(settings=settings, store=Store(data / "state.db"),
                   logs=LogStore(data / "logs"), runtime=runtime)

    @property
    def s3(self) -> S3Client:
        with self._lock:
            if self._s3 is None:
                settings = self.settings
                self._s3 = S3Client(settings.s3_endpoint_url, settings.region,
                                    settings.transfer_workers,
                                    access_key_id=settings.s3_access_key_id,
                                    secret_access_key=settings.s3_secret_access_key)
            return self._s3

    @property
    def capacity(self) -> Ledger:
        """The capacity ledger of this data directory (``control.capacity``), opened on
        first use."""
        with self._lock:
            if self._capacity is None:
                self._capacity = Ledger(self.settings.data_dir / "capacity.db")
            return self._capacity

    def job_ended(self, kind: str, name: str) -> None:
        """Hand an ended job to the MLflow forwarder when ``mlflow_tracking_uri`` is set
        (``control.metrics.mlflow``): a queue put, never a wait."""
        forwarder = self._mlflow()
        if forwarder is not None:
            forwarder.submit(kind, name)

    def job_progressed(self, kind: str, name: str) -> None:
        """A running job has new metric points: the MLflow forwarder's, as :meth:`job_ended`."""
        forwarder = self._mlflow()
        if forwarder is not None:
            forwarder.progress(kind, name)

    def _mlflow(self) -> MlflowForwarder | None:
        uri = self.settings.mlflow_tracking_uri
        if not uri:
            return None
        with self._lock:
            if self._forwarder is None:
                from shipyard.control.metrics.mlflow import MlflowForwarder

                self._forwarder = MlflowForwarder(uri, self.store)
            return self._forwarder

    def close_forwarder(self, timeout: float) -> None:
        """Forward what is queued for up to ``timeout`` seconds (before the store closes)."""
        with self._lock:
            forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            forwarder.close(timeout)

    @property
    def file_roots(self) -> FileRoots:
        """Where local locations may point; built per use, so a folder that became a
        symbolic link since the last job is seen."""
        return FileRoots.of(self.settings)

    def job_dir(self, kind: str, name: str, uid: str) -> Path:
        return self.settings.data_dir / "jobs" / kind / f"{name}-{uid}"

    def job_lock(self, kind: str, name: str) -> JobLock:
        return JobLock(self.settings.data_dir / "locks" / f"{kind}-{name}.lock")


def runtime_for(settings: Settings) -> Runtime:
    """The runtime the settings ask for; ``auto`` = Docker if an engine answers, else process."""
    from shipyard.runtimes import (
        SCOPE_LABEL,
        Confinement,
        DockerRuntime,
        ProcessRuntime,
        default_runtime,
    )

    labels = {SCOPE_LABEL: settings.scope} if settings.scope else None
    confinement = Confinement(pids_limit=settings.container_pids_limit,
                              extra_capabilities=frozenset(settings.container_extra_capabilities))
    if settings.runtime == "docker":
        return DockerRuntime(labels=labels, confinement=confinement)
    if settings.runtime == "process":
        return ProcessRuntime(settings.data_dir / "processes")
    if settings.runtime == "swarm":
        from shipyard.runtimes.swarm import SwarmRuntime

        swarm = SwarmRuntime(
            settings.swarm_manager, labels=labels, confinement=confinement,
            registry=settings.swarm_registry, registry_push=settings.swarm_registry_push,
            node_engines=dict(e.split("=", 1) for e in settings.swarm_node_engines),
            placement=settings.swarm_placement, shared_paths=settings.swarm_shared_paths,
            cpu_overcommit=settings.cpu_overcommit,
            stop_grace_seconds=settings.stop_grace_seconds,
            depot=_depot(settings, "swarm_depot"), platform_root=settings.data_dir,
            stager_image=settings.swarm_stager_image)
        swarm.ping()
        return swarm
    if settings.runtime == "kubernetes":
        from shipyard.runtimes.kubernetes import KubernetesRuntime

        cluster = KubernetesRuntime(
            settings.kubernetes_kubeconfig, namespace=settings.kubernetes_namespace,
            labels=labels, confinement=confinement,
            shared_paths=settings.kubernetes_shared_paths,
            cpu_overcommit=settings.cpu_overcommit,
            stop_grace_seconds=settings.stop_grace_seconds,
            image_pull_policy=settings.kubernetes_image_pull_policy,
            cluster_dns=settings.kubernetes_cluster_dns,
            depot=_depot(settings, "kubernetes_depot"), platform_root=settings.data_dir,
            stager_image=settings.kubernetes_stager_image)
        cluster.ping()
        return cluster
    return default_runtime(settings.data_dir, labels, confinement)


def _depot(settings: Settings, setting: str) -> S3Depot | None:
    """A cluster runtime's depot where ``setting`` says, on the platform's store (its own
    client: the runtime is made before the context that would lend one)."""
    prefix = getattr(settings, setting)
    if not prefix:
        return None
    from shipyard.control.depot import S3Depot

    return S3Depot(S3Client(settings.s3_endpoint_url, settings.region,
                            settings.transfer_workers,
                            access_key_id=settings.s3_access_key_id,
                            secret_access_key=settings.s3_secret_access_key),
                   prefix, setting)
