"""SageMaker control-plane operations: training and processing jobs, and tags.

Handlers translate between the wire (already validated against botocore's model) and the
control plane; they hold no business logic. Responses carry exactly SageMaker's members:
epoch-second timestamps, lower-cased names in ARNs, ``NextToken`` only when more follows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shipyard.api import pagination
from shipyard.control import ControlPlane
from shipyard.control.records import KINDS
from shipyard.errors import ValidationError

Handler = Callable[[ControlPlane, dict[str, Any]], dict[str, Any]]

_SUMMARY_FIELDS = {
    "training": ("TrainingJobName", "TrainingJobArn", "CreationTime", "TrainingEndTime",
                 "LastModifiedTime", "TrainingJobStatus", "SecondaryStatus"),
    "processing": ("ProcessingJobName", "ProcessingJobArn", "CreationTime", "ProcessingEndTime",
                   "LastModifiedTime", "ProcessingJobStatus", "FailureReason", "ExitMessage"),
}
_SUMMARY_LIST = {"training": "TrainingJobSummaries", "processing": "ProcessingJobSummaries"}


def _create(kind: str) -> Handler:
    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        tags = params.pop("Tags", None) or []
        create = (plane.create_training_job if kind == "training"
                  else plane.create_processing_job)
        result = create(params)
        if tags:
            plane.ctx.store.add_tags(next(iter(result.values())),
                                     {t["Key"]: t.get("Value", "") for t in tags})
        return result
    return handler


def _describe(kind: str) -> Handler:
    name_field = KINDS[kind][2]

    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        describe = (plane.describe_training_job if kind == "training"
                    else plane.describe_processing_job)
        return describe(params[name_field])
    return handler


def _stop(kind: str) -> Handler:
    name_field = KINDS[kind][2]

    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        plane.stop_job(kind, params[name_field])
        return {}
    return handler


def _list(kind: str) -> Handler:
    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        filters: dict[str, Any] = {
            "statuses": (params["StatusEquals"],) if params.get("StatusEquals") else (),
            "name_contains": params.get("NameContains"),
            "created_after": params.get("CreationTimeAfter"),
            "created_before": params.get("CreationTimeBefore"),
            "modified_after": params.get("LastModifiedTimeAfter"),
            "modified_before": params.get("LastModifiedTimeBefore"),
            "sort_by": params.get("SortBy") or "CreationTime",
            # AWS documents Ascending as the default order.
            "descending": params.get("SortOrder") == "Descending",
        }
        for key in ("created_after", "created_before", "modified_after", "modified_before"):
            filters[key] = _epoch(filters[key])
        limit = int(params.get("MaxResults") or 10)
        offset = pagination.decode(params.get("NextToken"), filters)
        # One row more than asked tells whether another page exists, without a COUNT.
        rows = plane.ctx.store.list_jobs(kind, offset=offset, limit=limit + 1, **filters)
        fields = _SUMMARY_FIELDS[kind]
        summaries = [{f: r.record[f] for f in fields if f in r.record} for r in rows[:limit]]
        result: dict[str, Any] = {_SUMMARY_LIST[kind]: summaries}
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
    "AddTags": add_tags,
    "ListTags": list_tags,
    "DeleteTags": delete_tags,
}
