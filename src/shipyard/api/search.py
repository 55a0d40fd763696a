"""SageMaker's ``Search``: the request (already checked against botocore's model) handed to
the plane, the answer shaped as AWS's ``SearchResponse``.

Each result is a ``SearchRecord`` holding one member named after the resource
(``{"TrainingJob": {...}}``, ``{"HyperParameterTuningJob": {...}}``; a model's is a
``ModelDashboardModel``: ``{"Model": {"Model": {...}, "Endpoints": [...]}}``);
``NextToken`` comes only while more records match, and is good for the same request only
(``api.pagination``); ``TotalHits`` counts every match.
"""

from __future__ import annotations

from typing import Any

from shipyard.api import pagination
from shipyard.control import ControlPlane
from shipyard.control.search.fields import RECORD_MEMBERS

__all__ = ["DEFAULT_MAX_RESULTS", "search"]

DEFAULT_MAX_RESULTS = 10


def search(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    members = ("Resource", "SearchExpression", "SortBy", "SortOrder")
    request: dict[str, Any] = {k: params[k] for k in members if k in params}
    limit = int(params.get("MaxResults") or DEFAULT_MAX_RESULTS)
    offset = pagination.decode(params.get("NextToken"), request)
    page = plane.search(request, offset, limit)
    member = RECORD_MEMBERS.get(request["Resource"], request["Resource"])
    result: dict[str, Any] = {"Results": [{member: record} for record in page.records]}
    if offset + limit < page.total:
        result["NextToken"] = pagination.encode(offset + limit, request)
    result["TotalHits"] = {"Value": page.total, "Relation": "EqualTo"}
    return result
