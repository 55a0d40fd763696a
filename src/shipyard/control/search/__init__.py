"""SageMaker's ``Search`` over the records Shipyard keeps: training jobs, model packages,
model package groups, endpoints, hyperparameter tuning jobs and models, each model as a
``ModelDashboardModel`` with the endpoints hosting it (:mod:`dashboard`; docs/registry.md).

A request is compiled once (:mod:`expression`: names checked against botocore's model of the
resource's search record, :mod:`fields`), then run over an index that keeps the named record
members by column and re-reads only what changed (:mod:`index`). Resources Shipyard has no
records of (experiments, pipelines, feature groups...) are searched as AWS would search an
account without any: the request is checked, and no record matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipyard import kinds
from shipyard.control.search.expression import Query, compile_query
from shipyard.control.search.fields import record_shape
from shipyard.control.search.index import SearchIndex

__all__ = ["RESOURCES", "Query", "SearchIndex", "SearchPage", "compile_query", "search"]

#: The Search resources Shipyard keeps records of, and their kinds.
RESOURCES: dict[str, kinds.Kind] = {
    "TrainingJob": kinds.TRAINING, "ModelPackage": kinds.MODEL_PACKAGE,
    "ModelPackageGroup": kinds.MODEL_PACKAGE_GROUP, "Endpoint": kinds.ENDPOINT,
    "HyperParameterTuningJob": kinds.TUNING, "Model": kinds.MODEL,
}


@dataclass(frozen=True)
class SearchPage:
    #: The page's records (Describe documents with their ``Tags``), in order.
    records: list[dict[str, Any]]
    #: How many records match in all.
    total: int
    #: The request's canonical form (a NextToken is good for this request only).
    fingerprint: str


def search(index: SearchIndex, request: dict[str, Any], offset: int, limit: int
           ) -> SearchPage:
    """The records ``offset`` to ``offset + limit`` of a Search request (checked against
    botocore's model already) that match its expression, in its order."""
    resource = request["Resource"]
    if record_shape(resource) is None:
        return SearchPage([], 0, resource)
    query = compile_query(resource, request.get("SearchExpression"), request.get("SortBy"),
                          request.get("SortOrder"))
    kind = RESOURCES.get(resource)
    if kind is None:
        return SearchPage([], 0, query.fingerprint)
    records, total = index.search(kind.key, query, offset, limit)
    return SearchPage(records, total, query.fingerprint)
