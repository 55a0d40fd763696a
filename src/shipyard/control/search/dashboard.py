"""What a ``Model``'s search record (a ``ModelDashboardModel``) holds beside its DescribeModel
document, read from the store's other records.

* ``Endpoints``: each endpoint whose current endpoint configuration names the model in a
  production (or shadow) variant, as a ``ModelDashboardEndpoint`` (name, ARN, creation and
  last modified times, status); ``[]`` when none;
* ``LastBatchTransformJob``: the model's most recently created transform job, as a
  ``TransformJob`` (its Describe document, with its tags).

``MonitoringSchedules`` and ``ModelCard`` have no records here: they are left out of the
answer and no record has them (``Exists`` matches none). Like :mod:`index`, this reads the
store's tables (``jobs``, ``tags``) directly, in the index's read transaction.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from shipyard import kinds
from shipyard.control.search import fields

__all__ = ["JOINED", "joined"]

_ENDPOINT_MEMBERS = ("EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime",
                     "EndpointStatus")

Join = Callable[[sqlite3.Connection, set[str]], dict[str, Any]]


def endpoints(conn: sqlite3.Connection, models: set[str]) -> dict[str, Any]:
    """model name -> the ``ModelDashboardEndpoint`` of each endpoint hosting it, by name
    (``[]``: none; the property does not exist then)."""
    hosted: dict[str, set[str]] = {}
    for config, variants, shadows in conn.execute(
            "SELECT json_extract(record, '$.EndpointConfigName'), "
            "json_extract(record, '$.ProductionVariants'), "
            "json_extract(record, '$.ShadowProductionVariants') FROM jobs "
            "WHERE kind = ? AND json_valid(record)", (kinds.ENDPOINT_CONFIG.key,)):
        for listed in (variants, shadows):
            for variant in _decoded(listed):
                model = variant.get("ModelName") if isinstance(variant, dict) else None
                if model in models and isinstance(config, str):
                    hosted.setdefault(config, set()).add(model)
    found: dict[str, Any] = {model: [] for model in models}
    if not hosted:
        return found
    members = ", ".join(f"json_extract(record, '$.{m}')" for m in _ENDPOINT_MEMBERS)
    for row in conn.execute(
            f"SELECT json_extract(record, '$.EndpointConfigName'), {members} FROM jobs "
            "WHERE kind = ? AND json_valid(record) ORDER BY name", (kinds.ENDPOINT.key,)):
        config, values = row[0], row[1:]
        entry = {k: v for k, v in zip(_ENDPOINT_MEMBERS, values, strict=True)
                 if v is not None}
        for model in sorted(hosted.get(config, ())):
            found[model].append(entry)
    return found


def last_transform(conn: sqlite3.Connection, models: set[str]) -> dict[str, Any]:
    """model name -> its most recently created transform job (a ``TransformJob``)."""
    latest: dict[str, tuple[float, str]] = {}
    for model, created, name in conn.execute(
            "SELECT json_extract(record, '$.ModelName'), creation_time, name FROM jobs "
            "WHERE kind = ? AND json_valid(record)", (kinds.TRANSFORM.key,)):
        if model in models and (model not in latest or created > latest[model][0]):
            latest[model] = (created, name)
    if not latest:
        return {}
    names = [name for _, name in latest.values()]
    records: dict[str, dict[str, Any]] = {}
    for name, text in conn.execute(
            f"SELECT name, record FROM jobs WHERE kind = ? AND name IN "
            f"({','.join('?' * len(names))})", [kinds.TRANSFORM.key, *names]):
        with contextlib.suppress(ValueError):
            record = json.loads(text)
            if isinstance(record, dict):
                allowed = _transform_members()
                records[name] = {k: v for k, v in record.items() if k in allowed}
    tags = _tags(conn, [r["TransformJobArn"] for r in records.values()
                        if isinstance(r.get("TransformJobArn"), str)])
    for record in records.values():
        record["Tags"] = tags.get(str(record.get("TransformJobArn")), [])
    return {model: records[name] for model, (_, name) in latest.items() if name in records}


#: The members of a Model's search record read from other records, and how.
JOINED: dict[str, dict[str, Join]] = {
    "Model": {"Endpoints": endpoints, "LastBatchTransformJob": last_transform}}


def joined(conn: sqlite3.Connection, resource: str, member: str, models: Iterable[str]
           ) -> dict[str, Any]:
    """model name -> the value of ``member`` (one of :data:`JOINED`) for each of ``models``
    that has one."""
    return JOINED[resource][member](conn, {m for m in models if isinstance(m, str)})


def _decoded(value: Any) -> list[Any]:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    return value if isinstance(value, list) else []


def _tags(conn: sqlite3.Connection, arns: list[str]) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    if arns:
        for arn, key, value in conn.execute(
                f"SELECT arn, key, value FROM tags WHERE arn IN ({','.join('?' * len(arns))}) "
                "ORDER BY key", arns):
            found.setdefault(arn, []).append({"Key": key, "Value": value})
    return found


@cache
def _transform_members() -> frozenset[str]:
    shape = fields.record_shape("Model")
    if shape is None:  # pragma: no cover - botocore's model has it
        return frozenset()
    return frozenset(shape.members["LastBatchTransformJob"].members)
