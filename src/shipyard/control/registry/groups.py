"""Model package groups: CreateModelPackageGroup, Describe, List and Delete.

A group is a record (``ModelPackageGroupStatus`` is ``Completed`` from the start: nothing runs
for it) plus, in its row's private state, the last version number it gave out, so versions
are never reused, even after the newest one is deleted. Creating a version and deleting the
group take the group's lock (:func:`locked`, an ``flock`` shared by every process on the
data directory): a version is never added to a group being deleted, and a group that holds
versions is refused deletion with AWS's ``ConflictException``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import Any

from shipyard.control.context import Context
from shipyard.control.registry import names
from shipyard.control.registry.names import GROUP, PACKAGE
from shipyard.control.shapes import check_request
from shipyard.control.state import records
from shipyard.errors import Conflict, ResourceInUse, ResourceNotFound, ValidationError

COMPLETED = "Completed"
DELETING = "Deleting"


def create(ctx: Context, request: dict[str, Any], caller: dict[str, Any]) -> str:
    """A CreateModelPackageGroup request (its ``Tags`` already taken off); answers its ARN."""
    req = check_request("CreateModelPackageGroup", request)
    name = req["ModelPackageGroupName"]
    key = name.lower()
    arn = names.group_arn(ctx.settings, key)
    record: dict[str, Any] = {"ModelPackageGroupName": name, "ModelPackageGroupArn": arn}
    if "ModelPackageGroupDescription" in req:
        record["ModelPackageGroupDescription"] = req["ModelPackageGroupDescription"]
    record.update(CreationTime=records.now(), CreatedBy=dict(caller),
                  ModelPackageGroupStatus=COMPLETED)
    if "ManagedConfiguration" in req:
        record["ManagedConfiguration"] = req["ManagedConfiguration"]
    try:
        ctx.store.insert_job(GROUP.key, key, arn, COMPLETED, record, {"last_version": 0})
    except ResourceInUse:
        # The SageMaker SDK's register() matches "already exists" and goes on.
        raise ValidationError(f"Model Package Group already exists: {arn}") from None
    return arn


def describe(ctx: Context, name_or_arn: str) -> dict[str, Any]:
    key = names.group_key(ctx.settings, name_or_arn)
    try:
        return ctx.store.get_job(GROUP.key, key).record
    except ResourceNotFound:
        raise names.group_not_found(ctx.settings, name_or_arn) from None


def listing(ctx: Context, *, name_contains: str | None = None, **filters: Any
            ) -> list[dict[str, Any]]:
    """Groups as ListModelPackageGroups sees them; ``filters`` as ``Store.list_jobs`` takes
    them. ``NameContains`` is matched without regard to case (rows are keyed lower-cased)."""
    rows = ctx.store.list_jobs(GROUP.key, name_contains=(name_contains or "").lower() or None,
                               **filters)
    return [row.record for row in rows]


def delete(ctx: Context, name_or_arn: str) -> None:
    """DeleteModelPackageGroup: refused while the group holds versions (ConflictException)."""
    key = names.group_key(ctx.settings, name_or_arn)
    with locked(ctx, key):
        try:
            record = ctx.store.get_job(GROUP.key, key).record
        except ResourceNotFound:
            raise names.group_not_found(ctx.settings, name_or_arn) from None
        held = versions(ctx, key)
        if held:
            raise Conflict(
                f"Model Package Group {record['ModelPackageGroupArn']} cannot be deleted: it "
                f"holds {len(held)} model package version(s). Delete them first "
                "(DeleteModelPackage).")

        def deleting(rec: dict[str, Any], runner: dict[str, Any]) -> str:
            rec["ModelPackageGroupStatus"] = DELETING
            return DELETING

        ctx.store.mutate(GROUP.key, key, deleting)
        ctx.store.delete_job(GROUP.key, key)


def versions(ctx: Context, key: str) -> list[dict[str, Any]]:
    """The records of the versions group ``key`` holds, oldest first."""
    prefix = f"{key}/"
    rows = ctx.store.list_jobs(PACKAGE.key, name_contains=prefix, descending=False)
    return [row.record for row in rows if row.name.startswith(prefix)]


def next_version(ctx: Context, key: str, name_or_arn: str) -> tuple[str, int]:
    """Take the group's next version number (the caller holds :func:`locked`); answers the
    group's name as created and the number. Refused for a missing group or one being
    deleted."""
    taken: list[tuple[str, int]] = []

    def take(rec: dict[str, Any], runner: dict[str, Any]) -> None:
        if rec.get("ModelPackageGroupStatus") == DELETING:
            raise Conflict(f"Model Package Group {rec['ModelPackageGroupArn']} is being "
                           "deleted.")
        number = int(runner.get("last_version") or 0) + 1
        runner["last_version"] = number
        taken.append((str(rec["ModelPackageGroupName"]), number))

    try:
        ctx.store.mutate(GROUP.key, key, take)
    except ResourceNotFound:
        raise names.group_not_found(ctx.settings, name_or_arn) from None
    return taken[0]


@contextlib.contextmanager
def locked(ctx: Context, key: str) -> Iterator[None]:
    """Hold group ``key``'s lock (blocking): one writer of its versions at a time, in every
    process on this data directory. ``flock`` locks belong to an open file, so two threads
    of one process exclude each other too, and a holder that dies releases it."""
    path = ctx.settings.data_dir / "locks" / f"{GROUP.key}-{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
