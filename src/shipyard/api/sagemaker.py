"""SageMaker control-plane operations: training, processing and transform jobs, models,
endpoint configs, endpoints, and tags.

Handlers translate between the wire (already validated against botocore's model) and the
control plane; they hold no business logic. Responses carry exactly SageMaker's members:
epoch-second timestamps, lower-cased names in ARNs, ``NextToken`` only when more follows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shipyard.api import pagination
from shipyard.control import ControlPlane
from shipyard.errors import ValidationError

Handler = Callable[[ControlPlane, dict[str, Any]], dict[str, Any]]
Create = Callable[[ControlPlane, dict[str, Any]], dict[str, str]]
Describe = Callable[[ControlPlane, str], dict[str, Any]]
Delete = Callable[[ControlPlane, str], None]

#: kind -> the request member naming the resource (kinds as the store keys its rows).
_NAME_FIELDS = {
    "training": "TrainingJobName", "processing": "ProcessingJobName",
    "transform": "TransformJobName", "model": "ModelName",
    "endpoint-config": "EndpointConfigName", "endpoint": "EndpointName",
}
_CREATE: dict[str, Create] = {
    "training": lambda plane, req: plane.create_training_job(req),
    "processing": lambda plane, req: plane.create_processing_job(req),
    "transform": lambda plane, req: plane.create_transform_job(req),
    "model": lambda plane, req: plane.create_model(req),
    "endpoint-config": lambda plane, req: plane.create_endpoint_config(req),
    "endpoint": lambda plane, req: plane.create_endpoint(req),
}
_DESCRIBE: dict[str, Describe] = {
    "training": lambda plane, name: plane.describe_training_job(name),
    "processing": lambda plane, name: plane.describe_processing_job(name),
    "transform": lambda plane, name: plane.describe_transform_job(name),
    "model": lambda plane, name: plane.describe_model(name),
    "endpoint-config": lambda plane, name: plane.describe_endpoint_config(name),
    "endpoint": lambda plane, name: plane.describe_endpoint(name),
}
_DELETE: dict[str, Delete] = {
    "model": lambda plane, name: plane.delete_model(name),
    "endpoint-config": lambda plane, name: plane.delete_endpoint_config(name),
    "endpoint": lambda plane, name: plane.delete_endpoint(name),
}

_TIME_FILTERS = {"CreationTimeAfter": "created_after", "CreationTimeBefore": "created_before",
                 "LastModifiedTimeAfter": "modified_after",
                 "LastModifiedTimeBefore": "modified_before"}
_ALL_FILTERS = frozenset({"StatusEquals", "NameContains", *_TIME_FILTERS})


@dataclass(frozen=True)
class _Listing:
    """What one List operation returns and which of its members filter (botocore's model)."""

    summaries: str
    fields: tuple[str, ...]
    filters: frozenset[str]
    #: SortOrder when the request has none: the model's documentation says, per operation.
    descending: bool


_LISTINGS = {
    "training": _Listing(
        "TrainingJobSummaries",
        ("TrainingJobName", "TrainingJobArn", "CreationTime", "TrainingEndTime",
         "LastModifiedTime", "TrainingJobStatus", "SecondaryStatus"),
        _ALL_FILTERS, descending=False),
    "processing": _Listing(
        "ProcessingJobSummaries",
        ("ProcessingJobName", "ProcessingJobArn", "CreationTime", "ProcessingEndTime",
         "LastModifiedTime", "ProcessingJobStatus", "FailureReason", "ExitMessage"),
        _ALL_FILTERS, descending=False),
    "transform": _Listing(
        "TransformJobSummaries",
        ("TransformJobName", "TransformJobArn", "CreationTime", "TransformEndTime",
         "LastModifiedTime", "TransformJobStatus", "FailureReason"),
        _ALL_FILTERS, descending=True),
    "model": _Listing(
        "Models", ("ModelName", "ModelArn", "CreationTime"),
        frozenset({"NameContains", "CreationTimeAfter", "CreationTimeBefore"}),
        descending=True),
    "endpoint-config": _Listing(
        "EndpointConfigs", ("EndpointConfigName", "EndpointConfigArn", "CreationTime"),
        frozenset({"NameContains", "CreationTimeAfter", "CreationTimeBefore"}),
        descending=True),
    "endpoint": _Listing(
        "Endpoints",
        ("EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime", "EndpointStatus"),
        _ALL_FILTERS, descending=True),
}


def _create(kind: str) -> Handler:
    create = _CREATE[kind]

    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        tags = params.pop("Tags", None) or []
        result = create(plane, params)
        if tags:
            plane.ctx.store.add_tags(next(iter(result.values())),
                                     {t["Key"]: t.get("Value", "") for t in tags})
        return result
    return handler


def _describe(kind: str) -> Handler:
    describe, name_field = _DESCRIBE[kind], _NAME_FIELDS[kind]

    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        return describe(plane, params[name_field])
    return handler


def _delete(kind: str) -> Handler:
    delete, name_field = _DELETE[kind], _NAME_FIELDS[kind]

    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        delete(plane, params[name_field])
        return {}
    return handler


def _stop(kind: str) -> Handler:
    name_field = _NAME_FIELDS[kind]

    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        plane.stop_job(kind, params[name_field])
        return {}
    return handler


def update_endpoint(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    return plane.update_endpoint(params)


def _list(kind: str) -> Handler:
    listing = _LISTINGS[kind]

    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        # Members the operation does not model are ignored, as unknown members are.
        given = {k: v for k, v in params.items() if k in listing.filters}
        order = params.get("SortOrder")
        filters: dict[str, Any] = {
            "statuses": (given["StatusEquals"],) if given.get("StatusEquals") else (),
            "name_contains": given.get("NameContains"),
            "sort_by": params.get("SortBy") or "CreationTime",
            "descending": listing.descending if order is None else order == "Descending",
        }
        for member, key in _TIME_FILTERS.items():
            filters[key] = _epoch(given.get(member))
        limit = int(params.get("MaxResults") or 10)
        offset = pagination.decode(params.get("NextToken"), filters)
        # One row more than asked tells whether another page exists, without a COUNT.
        rows = plane.ctx.store.list_jobs(kind, offset=offset, limit=limit + 1, **filters)
        summaries = [{f: r.record[f] for f in listing.fields if f in r.record}
                     for r in rows[:limit]]
        result: dict[str, Any] = {listing.summaries: summaries}
        if len(rows) > limit:
            result["NextToken"] = pagination.encode(offset + limit, filters)
        return result
    return handler


def _epoch(value: Any) -> float | None:
    """botocore sends timestamps as epoch numbers; ISO strings are accepted too."""
    if value is None or isinstance(value, (int, float)):
        return value
    import datetime as dt

    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationError(f"Invalid timestamp {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def _check_resource(plane: ControlPlane, arn: str) -> None:
    if not plane.ctx.store.arn_exists(arn):
        raise ValidationError(f"Resource {arn} does not exist.")


def add_tags(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    arn = params["ResourceArn"]
    _check_resource(plane, arn)
    tags = {t["Key"]: t.get("Value", "") for t in params["Tags"]}
    plane.ctx.store.add_tags(arn, tags)
    return {"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}


def list_tags(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    arn = params["ResourceArn"]
    _check_resource(plane, arn)
    tags = plane.ctx.store.list_tags(arn)
    limit = int(params.get("MaxResults") or 50)
    filters = {"arn": arn}
    offset = pagination.decode(params.get("NextToken"), filters)
    page = tags[offset:offset + limit]
    result: dict[str, Any] = {"Tags": [{"Key": k, "Value": v} for k, v in page]}
    if offset + limit < len(tags):
        result["NextToken"] = pagination.encode(offset + limit, filters)
    return result


def delete_tags(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    arn = params["ResourceArn"]
    _check_resource(plane, arn)
    plane.ctx.store.delete_tags(arn, list(params["TagKeys"]))
    return {}


HANDLERS: dict[str, Handler] = {
    "CreateTrainingJob": _create("training"),
    "DescribeTrainingJob": _describe("training"),
    "ListTrainingJobs": _list("training"),
    "StopTrainingJob": _stop("training"),
    "CreateProcessingJob": _create("processing"),
    "DescribeProcessingJob": _describe("processing"),
    "ListProcessingJobs": _list("processing"),
    "StopProcessingJob": _stop("processing"),
    "CreateTransformJob": _create("transform"),
    "DescribeTransformJob": _describe("transform"),
    "ListTransformJobs": _list("transform"),
    "StopTransformJob": _stop("transform"),
    "CreateModel": _create("model"),
    "DescribeModel": _describe("model"),
    "ListModels": _list("model"),
    "DeleteModel": _delete("model"),
    "CreateEndpointConfig": _create("endpoint-config"),
    "DescribeEndpointConfig": _describe("endpoint-config"),
    "ListEndpointConfigs": _list("endpoint-config"),
    "DeleteEndpointConfig": _delete("endpoint-config"),
    "CreateEndpoint": _create("endpoint"),
    "DescribeEndpoint": _describe("endpoint"),
    "ListEndpoints": _list("endpoint"),
    "UpdateEndpoint": update_endpoint,
    "DeleteEndpoint": _delete("endpoint"),
    "AddTags": add_tags,
    "ListTags": list_tags,
    "DeleteTags": delete_tags,
}
