"""Accepting a job: what the plane's door does with a create before a runner drives it.

Shared by the door and by the runners that create jobs of their own (a tuning job's trials
are training jobs, accepted exactly as a CreateTrainingJob is).
"""

from __future__ import annotations

import logging
from typing import Any

from shipyard.control import capacity
from shipyard.control.context import Context
from shipyard.control.jobs.kind import Describe, JobKind, Preflight
from shipyard.control.limits import check_instance_type
from shipyard.control.staging import local_path_from_uri
from shipyard.control.state import records
from shipyard.errors import ResourceInUse, ShipyardError, ValidationError

log = logging.getLogger(__name__)

__all__ = ["accept", "confine", "preflight"]


def accept(ctx: Context, job: JobKind, request: dict[str, Any], describe: Describe,
           *, record_extra: dict[str, Any] | None = None) -> tuple[str, str]:
    """Validate ``request``, check what it names, and store the job's record (phase
    ``created``, for a runner to start); returns its name and ARN. ``record_extra``: members
    the creator adds to the record (a trial's ``TuningJobArn``)."""
    req = job.validate(request)
    confine(ctx, job.locations(req))
    preflight(ctx, job.preflight(req, ctx, describe))
    spec = job.kind
    name = req[spec.name_field]
    settings = ctx.settings
    arn = spec.arn(name, settings.region, settings.account_id)
    record = job.new_record(req, arn, records.now())
    record.update(record_extra or {})
    try:
        ctx.store.insert_job(spec.key, name, arn, records.IN_PROGRESS, record,
                             {"phase": "created", "runtime": ctx.runtime.kind})
    except ResourceInUse:
        label = spec.label.capitalize()
        raise ResourceInUse(
            f"{label} names must be unique within an AWS account and region, and a "
            f"{spec.label} with this name already exists ({arn})") from None
    try:
        capacity.enqueue(ctx, spec.key, name, record)
    except ShipyardError as exc:  # its runner queues it when it starts
        log.warning("%s %s: cannot take its place in the capacity queue: %s", spec.label,
                    name, exc)
    return name, arn


def confine(ctx: Context, locations: list[tuple[str, str]]) -> None:
    """Refuse, before anything exists, a request naming a host path it may not use
    (``confinement``); supervisors check again where they read or write it."""
    roots = ctx.file_roots
    for member, uri in locations:
        roots.path(uri, member)


def preflight(ctx: Context, check: Preflight) -> None:
    """Errors the user can fix, raised before anything is written or started."""
    if check.hosts > 1 and ctx.runtime.kind == "process":
        raise ValidationError("InstanceCount > 1 needs a container engine: the process "
                              "runtime runs one host per job")
    for uri in check.sources:
        if not uri.startswith("s3://"):
            local_path_from_uri(uri, ctx.file_roots)
    if check.instance_type is not None:
        check_instance_type(ctx, check.instance_type)
    ctx.runtime.check_image(check.image)
