"""The one small interface the control plane uses to run containers.

The control plane never talks to Docker directly: it builds a :class:`ContainerSpec` and calls
a :class:`Runtime`. Implementations: ``DockerRuntime`` (the local engine), ``ProcessRuntime``
(no engine: a local command or project folder under the same contract), ``FakeRuntime``
(in memory, for state-machine tests). Every implementation raises only ``shipyard.errors``.

Containers are identified by their ``name`` (unique per engine), so a restarted control plane
finds them again from its database without keeping engine-specific ids.
"""

from __future__ import annotations

import abc
import glob
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from shipyard.contract.labels import CAPABILITIES_LABEL
from shipyard.errors import ResourceNotFound, ValidationError

#: Capabilities every job and endpoint container keeps: what root in an image needs to
#: install packages, own and write files, change user and signal its children. Docker's
#: default set less NET_RAW (forged packets on the job's network), MKNOD, AUDIT_WRITE,
#: SETFCAP, SETPCAP and SYS_CHROOT, which no training or serving contract step uses.
BASE_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
                     "NET_BIND_SERVICE")
#: An image asks for more with ``CAPABILITIES_LABEL``.
#: Processes and threads one container may run (a fork bomb stops there, not at the host's).
DEFAULT_PIDS_LIMIT = 8192


@dataclass(frozen=True)
class Confinement:
    """What every container gets whatever its job says: no new privileges, a pids limit,
    :data:`BASE_CAPABILITIES` plus those of ``extra_capabilities`` its image asks for."""

    pids_limit: int = DEFAULT_PIDS_LIMIT
    extra_capabilities: frozenset[str] = frozenset()

    def capabilities_for(self, image: str, requested: str) -> list[str]:
        """The capabilities to grant an image whose label asks for ``requested``; raises
        ``ValidationError`` naming the setting for one the operator has not allowed."""
        asked = {c.strip().upper().removeprefix("CAP_") for c in requested.split(",")}
        asked.discard("")
        refused = sorted(asked - self.extra_capabilities - set(BASE_CAPABILITIES))
        if refused:
            raise ValidationError(
                f"image {image} asks for the capabilities {', '.join(refused)} (label "
                f"{CAPABILITIES_LABEL}); the operator allows them with the setting "
                "container_extra_capabilities (SHIPYARD_CONTAINER_EXTRA_CAPABILITIES)")
        return sorted(set(BASE_CAPABILITIES) | asked)


@dataclass(frozen=True)
class Mount:
    """A host path made visible in the container at ``target``."""

    source: str
    target: str
    read_only: bool = False
    #: Objects to place in the mount before the container starts, ``(s3:// URI, path in the
    #: mount)``: left by the control plane for a runtime that :attr:`Runtime.stages_on_nodes`
    #: to fetch where the container runs; empty for every other runtime.
    fetch: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    #: Arguments after the entrypoint (Docker CMD), e.g. ``["train"]``.
    command: list[str] | None = None
    #: Replaces the image's ENTRYPOINT when set (``ContainerEntrypoint``).
    entrypoint: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    hostname: str | None = None
    #: A network made by :meth:`Runtime.create_network`; ``None`` = default; "none" = isolated.
    network: str | None = None
    network_aliases: list[str] = field(default_factory=list)
    cpus: float | None = None
    memory_bytes: int | None = None
    #: GPUs of its own (the instance type's, as many as the runtime has: ``Capacity.gpus``);
    #: a runtime that hands out none ignores it.
    gpus: int = 0
    #: Host directory standing for the contract root (``/opt/ml``); the process runtime runs
    #: the command with this as its root, the docker runtime ignores it (mounts say it all).
    root_dir: str | None = None
    #: Publish a container port on 127.0.0.1 (container_port -> host_port, 0 = any free port).
    ports: dict[int, int] = field(default_factory=dict)
    #: Interchangeable replicas (the instances of one production variant of one deployment)
    #: share a group: specs alike but for their names and their ``HOST_LABEL``. A runtime with
    #: a replica controller of its own (Kubernetes: a Deployment) keeps each group as one
    #: object; the others ignore it.
    group: str | None = None


@dataclass(frozen=True)
class ContainerState:
    name: str
    running: bool
    exit_code: int | None = None
    oom_killed: bool = False
    #: Epoch seconds; None when unknown.
    started_at: float | None = None
    finished_at: float | None = None
    #: Engine error text, e.g. an exec failure before the process started.
    error: str = ""
    #: Host ports actually bound, container_port -> host_port.
    ports: dict[int, int] = field(default_factory=dict)
    #: The container's own address on its network, when the host can route to it (a Linux
    #: engine's bridge); "" otherwise. Reaching a port there skips the engine's port proxy.
    address: str = ""
    #: Where the published ``ports`` answer: the loopback of one engine, a node's address in
    #: a cluster.
    published_host: str = "127.0.0.1"
    #: Not started yet, and why (a cluster scheduler holding it for capacity, an image being
    #: fetched); ``running`` is True meanwhile, as it has not exited either.
    waiting: str = ""
    #: The cluster node it runs (or ran) on; "" on one engine.
    node: str = ""


@dataclass(frozen=True)
class ContainerStats:
    """One sample of what a running container uses (:meth:`Runtime.stats`)."""

    #: CPU time its processes used since it started, every core together, in seconds.
    cpu_seconds: float
    #: Memory in use (less the page cache the kernel may drop), and the most it may use.
    memory_bytes: int
    memory_limit_bytes: int
    #: GPU use and GPU memory in use, in percent; ``None``: it has no GPU.
    gpu_percent: float | None = None
    gpu_memory_percent: float | None = None


@dataclass(frozen=True)
class Capacity:
    """What one container of a runtime can be given at most: the machine's (or the engine's
    virtual machine's) CPUs and memory, and the GPUs the runtime hands to a container."""

    cpus: float
    memory_bytes: int
    gpus: int = 0


def host_capacity() -> Capacity:
    """This machine as a process sees it: the CPUs it may run on (its affinity, which a
    cgroup's cpuset narrows), its physical memory, and the NVIDIA GPUs in ``/dev``."""
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        memory = 0
    gpus = len(glob.glob("/dev/nvidia[0-9]*"))
    return Capacity(float(cpus), int(memory), gpus)


def wait_by_polling(runtime: Runtime, name: str, timeout: float, interval: float
                    ) -> ContainerState | None:
    """:meth:`Runtime.wait` for a runtime that can only ask: ``inspect`` every ``interval``
    seconds until the container has exited (its state) or ``timeout`` passed (``None``)."""
    deadline = time.monotonic() + timeout
    while True:
        state = runtime.inspect(name)
        if state is None:
            raise ResourceNotFound(f"no such container: {name}")
        if not state.running:
            return state
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(interval, remaining))


@dataclass(frozen=True)
class LogLine:
    #: Epoch nanoseconds as the runtime recorded them; used to resume a log without repeats.
    timestamp_ns: int
    text: str
    stream: str = "stdout"


class Runtime(abc.ABC):
    """Where containers run."""

    kind: str = "abstract"
    #: True for a runtime whose own scheduler places containers by their reservations (a
    #: cluster's): the control plane's capacity ledger (``control.capacity``) stands aside.
    places_by_reservation: bool = False
    #: True for a runtime that has a container's nodes fetch its mounts' ``s3://`` data
    #: themselves (:attr:`Mount.fetch`); the control plane stages everything else.
    stages_on_nodes: bool = False
    #: The setting naming the host paths its containers see (:meth:`shares_path`), if any.
    shared_paths_setting: str = ""

    def check_reference(self, image: str) -> None:  # noqa: B027 - optional hook
        """Raise ``ValidationError`` when ``image`` cannot name an image of this runtime at
        all (whether or not it exists yet)."""

    @abc.abstractmethod
    def check_image(self, image: str) -> None:
        """Raise ``ImageNotFound`` when ``image`` cannot be run (before anything starts)."""

    @abc.abstractmethod
    def create_network(self, name: str, labels: dict[str, str], *,
                       internal: bool = False) -> None:
        """A private network whose members resolve each other by hostname and alias;
        ``internal``: members reach each other and nothing else (network isolation)."""

    @abc.abstractmethod
    def remove_network(self, name: str) -> None:
        """Idempotent."""

    @abc.abstractmethod
    def start(self, spec: ContainerSpec) -> None:
        """Create and start; raises ``ResourceInUse`` if the name exists."""

    @abc.abstractmethod
    def inspect(self, name: str) -> ContainerState | None:
        """Current state, or ``None`` if no such container exists."""

    @abc.abstractmethod
    def wait(self, name: str, timeout: float) -> ContainerState | None:
        """Block up to ``timeout`` seconds for exit; the final state, or ``None`` if running."""

    @abc.abstractmethod
    def logs(self, name: str, since_ns: int = 0, follow: bool = False) -> Iterator[LogLine]:
        """Lines with ``timestamp_ns > since_ns``; with ``follow``, until the container exits."""

    @abc.abstractmethod
    def signal(self, name: str, signum: int) -> None:
        """Deliver a signal to the container's main process (no-op if it is not running)."""

    @abc.abstractmethod
    def remove(self, name: str) -> None:
        """Remove a stopped (or kill a running) container; idempotent."""

    @abc.abstractmethod
    def list(self, labels: dict[str, str]) -> list[str]:
        """Names of containers carrying all ``labels``."""

    def shares_path(self, path: os.PathLike[str] | str) -> bool:
        """Whether a container of this runtime sees the host path ``path`` as this machine
        does (always, on one machine; on a cluster only where every node shares it)."""
        return True

    def capacity(self) -> Capacity | None:
        """The most one container can get here (see :class:`Capacity`); ``None`` when
        unknown, and then instance types are not fitted to the machine."""
        return None

    def stats(self, name: str) -> ContainerStats | None:
        """What the running container ``name`` uses now; ``None`` when it does not run or
        the runtime cannot say."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release client resources."""
