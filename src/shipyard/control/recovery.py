"""Setting aside what a starting plane cannot take over, so one bad record never stops it.

A record that cannot be decoded, or whose recorded state makes its resumption fail, is
reported in the server's log and marked Failed with a reason that says why; its containers
(found by label, since its runner state may be unreadable) are removed. Every other resource
is taken over as usual. The original documents are kept in the runner state under
``set_aside``, so nothing the row held is lost.
"""

from __future__ import annotations

import logging
from typing import Any

from shipyard import kinds
from shipyard.contract.labels import JOB_KIND_LABEL, JOB_NAME_LABEL
from shipyard.control.context import Context
from shipyard.control.state import records
from shipyard.errors import ShipyardError

log = logging.getLogger(__name__)

#: The status a set-aside resource gets, per kind (models and configs have none).
_FAILED = "Failed"


def sweep_unreadable(ctx: Context) -> list[str]:
    """Set aside every row the store cannot decode; returns what was said about each."""
    said = []
    for row in ctx.store.unreadable_jobs():
        said.append(set_aside(ctx, row.kind, row.name, row.error, arn=row.arn,
                              created=row.creation_time,
                              original={"record": row.raw_record, "runner": row.raw_runner}))
    return said


def set_aside(ctx: Context, kind: str, name: str, error: str, *, arn: str | None = None,
              created: float | None = None, original: dict[str, Any] | None = None) -> str:
    """Mark one resource Failed because the plane could not take it over after a restart."""
    reason = (f"InternalServerError: the control plane could not resume this resource after a "
              f"restart and set it aside: {error}")[:1024]
    if original is None:
        row = ctx.store.get_job(kind, name)
        record, original = dict(row.record), {"record": row.record, "runner": row.runner}
        arn = row.arn
    else:
        record = {}
    # A row of a kind this version does not know still gets its reason and its status.
    known = kinds.get(kind) if kind in {k.key for k in kinds.ALL} else None
    status_field = known.status_field if known else ""
    name_field = known.name_field if known else ""
    arn_field = known.arn_field if known else ""
    at = records.now()
    record.setdefault("CreationTime", created or at)
    if name_field:
        record[name_field] = name
    if arn_field and arn:
        record[arn_field] = arn
    if status_field:
        record[status_field] = _FAILED
    record["FailureReason"] = reason
    record["LastModifiedTime"] = at
    ctx.store.overwrite_job(kind, name, _FAILED if status_field else "Created", record,
                            {"phase": "done", "set_aside": original})
    for container in _containers(ctx, kind, name):
        try:
            ctx.runtime.remove(container)
        except ShipyardError as exc:
            log.warning("%s %s: could not remove container %s: %s", kind, name, container, exc)
    line = f"{kind} {name}: set aside as Failed: {error}"
    log.error("%s", line)
    return line


def _containers(ctx: Context, kind: str, name: str) -> list[str]:
    try:
        return ctx.runtime.list({JOB_KIND_LABEL: kind, JOB_NAME_LABEL: name})
    except ShipyardError as exc:
        log.warning("%s %s: could not list its containers: %s", kind, name, exc)
        return []
