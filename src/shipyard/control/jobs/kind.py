"""What the control plane and the supervisor ask of a job kind, as protocols.

The plane's door drives every job kind through :class:`JobKind` (validate, check what the
request names, make the record, start a runner); the supervisor drives the kinds whose hosts
are containers that run to completion (training, processing) through :class:`ContainerJob`
(plan hosts, stage inputs, collect outputs, record the outcome). Neither branches on a kind's
name. Batch transform is a :class:`JobKind` with a runner of its own: its hosts are serving
containers fed records, not containers that run to completion.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from shipyard.control import staging
from shipyard.control.context import Context
from shipyard.control.jobs.spec import HostPlan
from shipyard.control.s3 import S3Client
from shipyard.errors import ValidationError
from shipyard.kinds import Kind

#: Why a supervisor stopped a job's containers (its runner state's ``trigger``).
STOP, MAX_RUNTIME, HOST_FAILED = "stop", "max-runtime", "host-failed"

#: ``describe(kind_key, name)``: another resource's record, as the plane's door answers it.
Describe = Callable[[str, str], dict[str, Any]]


@dataclass(frozen=True)
class Preflight:
    """What must be checked against the host before a job is accepted."""

    image: str
    #: Input locations that must exist now (s3:// ones are checked when staged).
    sources: list[str]
    hosts: int
    #: Checked against what the runtime can give (``control.limits``); None: nothing to check.
    instance_type: str | None = None


class Runner(Protocol):
    """Drives one job to its end; started on a thread or in a detached process."""

    name: str
    #: Set once the outcome is being recorded and containers removed: a graceful stop of the
    #: plane waits for that part instead of leaving containers behind.
    finishing: threading.Event

    def run(self) -> bool: ...


class JobKind(Protocol):
    kind: Kind

    def validate(self, request: dict[str, Any]) -> dict[str, Any]:
        """The request checked, with its defaults filled in (a deep copy)."""

    def locations(self, req: dict[str, Any]) -> list[tuple[str, str]]:
        """``(member, uri)`` of every location the request names, for confinement."""

    def preflight(self, req: dict[str, Any], ctx: Context, describe: Describe) -> Preflight:
        """Errors the user can fix that need the host; what the plane checks besides."""

    def new_record(self, req: dict[str, Any], arn: str, at: float) -> dict[str, Any]: ...

    def runner(self, ctx: Context, name: str) -> Runner: ...

    def transition(self, record: dict[str, Any], status: str, message: str, at: float) -> None:
        """A secondary-status transition; kinds without them ignore it."""


class JobServices(Protocol):
    """What a supervisor lends the kind it drives."""

    ctx: Context
    name: str

    def s3_for(self, uri: str) -> S3Client | None: ...

    def destination(self, uri: str) -> str: ...

    def transition(self, status: str, message: str) -> None: ...


class ContainerJob(JobKind, Protocol):
    """A job whose hosts are containers that run to completion."""

    def image(self, record: dict[str, Any]) -> str: ...

    def resources(self, record: dict[str, Any]) -> dict[str, Any]:
        """``InstanceType`` and ``InstanceCount`` (ResourceConfig, ClusterConfig)."""

    def host_count(self, record: dict[str, Any]) -> int: ...

    def network_isolated(self, record: dict[str, Any]) -> bool: ...

    def metric_definitions(self, record: dict[str, Any]) -> list[dict[str, Any]]: ...

    def plan(self, job: JobServices, record: dict[str, Any], job_dir: Path) -> list[HostPlan]:
        """Stage the inputs and lay out each host (the ``created`` phase)."""

    def started(self, record: dict[str, Any], at: float, notice: str = "") -> None:
        """Record that the containers run; ``notice``: how their limits were fitted to this
        machine (``control.limits``), for the user, or ""."""

    def deliver(self, job: JobServices, record: dict[str, Any], roots: dict[str, Path],
                status: str, job_dir: Path) -> None:
        """Upload what SageMaker uploads for this kind; raises ShipyardError if that fails."""

    def complete(self, record: dict[str, Any], outcome: Outcome) -> None:
        """Record the end: times, metrics, messages (the status is set by the supervisor)."""

    def failed_early(self, record: dict[str, Any], reason: str, at: float) -> None:
        """Record a failure of the platform or of the inputs, before any container ran."""


@dataclass(frozen=True)
class Outcome:
    status: str
    reason: str | None
    #: Why the containers were stopped (stop, max-runtime, host-failed), or None.
    trigger: str | None
    started: float
    end: float
    roots: dict[str, Path]
    #: Metric points the job's log gave: (name, timestamp, value, host).
    series: list[tuple[str, float, float, str]]


def stage_inputs(job: JobServices, inputs: list[tuple[str, str, str, str]], hosts: list[str],
                 job_dir: Path) -> tuple[dict[str, dict[str, staging.StagedPath]],
                                         frozenset[str]]:
    """Stage each ``(name, uri, data type, distribution)`` input for ``hosts``: per input,
    each host's folder (with what its node fetches itself, on a runtime that
    ``stages_on_nodes``), and the inputs every host has a private copy of (writable in the
    container, ``staging.private_copies``)."""
    runtime = job.ctx.runtime
    paths: dict[str, dict[str, staging.StagedPath]] = {}
    writable = set()
    for name, uri, data_type, distribution in inputs:
        # Only a cluster's runtime can fail to see a local path (one engine sees them all).
        if runtime.shared_paths_setting and not uri.startswith("s3://") and not (
                runtime.shares_path(staging.local_path_from_uri(uri, job.ctx.file_roots))):
            raise ValidationError(
                f"Input {name}: {uri} is not on a path every node of the cluster shares "
                f"(setting {runtime.shared_paths_setting}); give the data as s3:// from a "
                "store every node reaches")
        staged = staging.stage_input(uri, data_type, distribution, hosts,
                                     job_dir / "staging" / name, job.s3_for(uri),
                                     roots=job.ctx.file_roots,
                                     on_nodes=runtime.stages_on_nodes)
        paths[name] = staged
        if staging.private_copies(staged):
            writable.add(name)
    return paths, frozenset(writable)


class Supervised:
    """What every :class:`ContainerJob` kind shares: the supervisor is its runner."""

    def runner(self, ctx: Context, name: str) -> Runner:
        # Imported here: the supervisor imports this module.
        from shipyard.control.jobs.supervisor import Supervisor

        return Supervisor(ctx, cast(ContainerJob, self), name)
