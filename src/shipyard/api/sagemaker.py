"""SageMaker control-plane operations: training, processing, transform and tuning jobs,
models, endpoint configs, endpoints, the model registry, Search, and tags.

Handlers translate between the wire (already validated against botocore's model) and the
control plane; they hold no business logic. Responses carry exactly SageMaker's members:
epoch-second timestamps, lower-cased names in ARNs, ``NextToken`` only when more follows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shipyard import kinds
from shipyard.api import iam, pagination
from shipyard.api import search as search_api
from shipyard.control import ControlPlane
from shipyard.errors import ValidationError
from shipyard.kinds import Kind

Handler = Callable[[ControlPlane, dict[str, Any]], dict[str, Any]]

_TIME_FILTERS = {"CreationTimeAfter": "created_after", "CreationTimeBefore": "created_before",
                 "LastModifiedTimeAfter": "modified_after",
                 "LastModifiedTimeBefore": "modified_before"}


def _create(kind: Kind) -> Handler:
    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        return plane.create(kind.key, params)
    return handler


def _describe(kind: Kind) -> Handler:
    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        return plane.describe(kind.key, params[kind.name_field])
    return handler


def _delete(kind: Kind) -> Handler:
    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        plane.delete(kind.key, params[kind.name_field])
        return {}
    return handler


def _stop(kind: Kind) -> Handler:
    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        plane.stop(kind.key, params[kind.name_field])
        return {}
    return handler


def update_endpoint(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    return plane.update_endpoint(params)


# -- the model registry (docs/registry.md) ---------------------------------------------------
def _caller(plane: ControlPlane) -> dict[str, Any]:
    """The UserContext recorded as CreatedBy / LastModifiedBy: every Shipyard key acts as
    the execution role (``api.sts``); which key signed is not known to handlers."""
    account = plane.settings.account_id
    return {"IamIdentity": {"Arn": iam.role_arn(account),
                            "PrincipalId": iam.role_id(account, iam.DEFAULT_ROLE_NAME)}}


def _create_registered(kind: Kind) -> Handler:
    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        return plane.create(kind.key, params, caller=_caller(plane))
    return handler


def update_model_package(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    return plane.update_model_package(params, caller=_caller(plane))


def list_model_packages(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    """ListModelPackages: by group, approval status, type (Unversioned unless a group is
    named, botocore's model), name and creation time; by CreationTime ascending unless the
    request says otherwise."""
    filters: dict[str, Any] = {
        "group": params.get("ModelPackageGroupName"),
        "approval": params.get("ModelApprovalStatus"),
        "package_type": params.get("ModelPackageType"),
        "name_contains": params.get("NameContains"),
        "created_after": _epoch(params.get("CreationTimeAfter")),
        "created_before": _epoch(params.get("CreationTimeBefore")),
        "sort_by": params.get("SortBy") or "CreationTime",
        "descending": params.get("SortOrder") == "Descending",
    }
    limit = int(params.get("MaxResults") or 10)
    offset = pagination.decode(params.get("NextToken"), filters)
    found = plane.list_resources(kinds.MODEL_PACKAGE.key, **filters)
    fields = kinds.MODEL_PACKAGE.summary_fields
    result: dict[str, Any] = {kinds.MODEL_PACKAGE.summaries: [
        {f: r[f] for f in fields if f in r} for r in found[offset:offset + limit]]}
    if len(found) > offset + limit:
        result["NextToken"] = pagination.encode(offset + limit, filters)
    return result


def _list(kind: Kind) -> Handler:
    def handler(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        # Members the operation does not model are ignored, as unknown members are.
        given = {k: v for k, v in params.items() if k in kind.list_filters}
        order = params.get("SortOrder")
        filters: dict[str, Any] = {
            "statuses": (given["StatusEquals"],) if given.get("StatusEquals") else (),
            "name_contains": given.get("NameContains"),
            "sort_by": params.get("SortBy") or kind.default_sort,
            "descending": kind.list_descending if order is None else order == "Descending",
        }
        for member, key in _TIME_FILTERS.items():
            filters[key] = _epoch(given.get(member))
        limit = int(params.get("MaxResults") or 10)
        offset = pagination.decode(params.get("NextToken"), filters)
        # One row more than asked tells whether another page exists, without a COUNT.
        found = plane.list_resources(kind.key, offset=offset, limit=limit + 1, **filters)
        summaries = [{f: r[f] for f in kind.summary_fields if f in r} for r in found[:limit]]
        result: dict[str, Any] = {kind.summaries: summaries}
        if len(found) > limit:
            result["NextToken"] = pagination.encode(offset + limit, filters)
        return result
    return handler


def list_training_jobs_for_tuning_job(plane: ControlPlane, params: dict[str, Any]
                                      ) -> dict[str, Any]:
    """A tuning job's trials, filtered, sorted and paged as SageMaker does: by Name unless
    ``SortBy`` says otherwise; by ``FinalObjectiveMetricValue``, trials without an objective
    are left out (botocore's model)."""
    name = params["HyperParameterTuningJobName"]
    sort_by = params.get("SortBy") or "Name"
    descending = params.get("SortOrder") == "Descending"
    status = params.get("StatusEquals")
    filters = {"name": name, "sort_by": sort_by, "descending": descending, "status": status}
    found = [t for t in plane.tuning_trials(name)
             if not status or t["TrainingJobStatus"] == status]
    if sort_by == "FinalObjectiveMetricValue":
        found = [t for t in found if "FinalHyperParameterTuningJobObjectiveMetric" in t]
    keys = {"Name": lambda t: t["TrainingJobName"],
            "CreationTime": lambda t: (t["CreationTime"], t["TrainingJobName"]),
            "Status": lambda t: (t["TrainingJobStatus"], t["TrainingJobName"]),
            "FinalObjectiveMetricValue": lambda t: (
                t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"], t["TrainingJobName"])}
    found.sort(key=keys[sort_by], reverse=descending)
    limit = int(params.get("MaxResults") or 10)
    offset = pagination.decode(params.get("NextToken"), filters)
    result: dict[str, Any] = {"TrainingJobSummaries": found[offset:offset + limit]}
    if len(found) > offset + limit:
        result["NextToken"] = pagination.encode(offset + limit, filters)
    return result


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


def add_tags(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    tags = {t["Key"]: t.get("Value", "") for t in params["Tags"]}
    plane.add_tags(params["ResourceArn"], tags)
    return {"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}


def list_tags(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    arn = params["ResourceArn"]
    tags = plane.list_tags(arn)
    limit = int(params.get("MaxResults") or 50)
    filters = {"arn": arn}
    offset = pagination.decode(params.get("NextToken"), filters)
    page = tags[offset:offset + limit]
    result: dict[str, Any] = {"Tags": [{"Key": k, "Value": v} for k, v in page]}
    if offset + limit < len(tags):
        result["NextToken"] = pagination.encode(offset + limit, filters)
    return result


def delete_tags(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    plane.delete_tags(params["ResourceArn"], list(params["TagKeys"]))
    return {}


def _handlers() -> dict[str, Handler]:
    """Every kind's operations, named as SageMaker names them, then the odd ones."""
    table: dict[str, Handler] = {}
    for kind in kinds.ALL:
        table[kind.operation("Create")] = _create(kind)
        table[kind.operation("Describe")] = _describe(kind)
        table[kind.operation("List")] = _list(kind)
        if kind.stoppable:
            table[kind.operation("Stop")] = _stop(kind)
        if kind.deletable:
            table[kind.operation("Delete")] = _delete(kind)
    table.update(UpdateEndpoint=update_endpoint, AddTags=add_tags, ListTags=list_tags,
                 DeleteTags=delete_tags,
                 ListTrainingJobsForHyperParameterTuningJob=list_training_jobs_for_tuning_job)
    for registered in (kinds.MODEL_PACKAGE_GROUP, kinds.MODEL_PACKAGE):
        table[registered.operation("Create")] = _create_registered(registered)
    table.update(ListModelPackages=list_model_packages,
                 UpdateModelPackage=update_model_package, Search=search_api.search)
    return table


HANDLERS: dict[str, Handler] = _handlers()
