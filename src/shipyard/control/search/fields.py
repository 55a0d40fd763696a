"""Search's property names, read against botocore's model of each resource's search record.

A property is a dotted path from a record member down through structures, lists (each item)
and maps (a key): ``TrainingJobName``, ``ResourceConfig.InstanceType``,
``InputDataConfig.DataSource.S3DataSource.S3Uri``, ``HyperParameters.learning_rate``.
Two more kinds of name are SageMaker's own: ``Tags.<key>`` (every resource whose record has
``Tags``) and, for training jobs, ``Metrics.<name>`` (a final metric's value). A name the
record cannot have is refused with ``ValidationException``; what the model says a leaf is
(text, number, timestamp, boolean) decides how a filter compares it.

A ``Model``'s search record is a ``ModelDashboardModel``: the DescribeModel document (what the
store keeps) is its member ``Model``, and the rest is read from other records (``Endpoints``,
``LastBatchTransformJob``: :mod:`dashboard`). Its properties are paths in that record
(``Model.PrimaryContainer.Image``, ``Endpoints.EndpointStatus``); a member of the ``Model``
may also be named alone (``ModelName``, ``PrimaryContainer.Image``, ``Tags.<key>``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING, Any

from shipyard.control.shapes import operation_model
from shipyard.errors import ValidationError

if TYPE_CHECKING:
    from botocore.model import Shape

#: Each Search ``Resource`` and the member of ``SearchRecord`` that holds one.
RECORD_MEMBERS = {
    "TrainingJob": "TrainingJob", "Experiment": "Experiment", "ExperimentTrial": "Trial",
    "ExperimentTrialComponent": "TrialComponent", "Endpoint": "Endpoint", "Model": "Model",
    "ModelPackage": "ModelPackage", "ModelPackageGroup": "ModelPackageGroup",
    "Pipeline": "Pipeline", "PipelineExecution": "PipelineExecution",
    "PipelineVersion": "PipelineVersion", "FeatureGroup": "FeatureGroup",
    "FeatureMetadata": "FeatureMetadata", "Project": "Project",
    "HyperParameterTuningJob": "HyperParameterTuningJob", "ModelCard": "ModelCard",
    "Job": "Job", "HubContent": "HubContent",
}
#: Resources whose stored record (the Describe document) is one member of the search record;
#: the index reads the record's other members from other records (:mod:`dashboard`).
STORED_UNDER = {"Model": "Model"}
#: Members Shipyard's records carry beyond botocore's model, searchable as text.
EXTENSIONS: dict[str, frozenset[str]] = {"ModelPackage": frozenset({"SourceTrainingJobArn"})}

TEXT, NUMBER, TIME, BOOLEAN, OBJECT = "text", "number", "timestamp", "boolean", "object"
#: A hyperparameter: text that compares as a number against a numeric value (the model's
#: Filter documentation).
HYPERPARAMETER = "hyperparameter"
_LEAF_TYPES = {"string": TEXT, "integer": NUMBER, "long": NUMBER, "float": NUMBER,
               "double": NUMBER, "timestamp": TIME, "boolean": BOOLEAN}

Extract = Callable[[Any], list[Any]]


@dataclass(frozen=True)
class Field:
    """A property of one resource: the record member it starts at and how to read it."""

    name: str
    #: The record member holding it: a key of the record, or ``Tags`` (from tag storage).
    member: str
    #: The values a member's value holds at this property (any item of a list matches).
    extract: Extract
    type: str
    #: The steps below ``member`` (structure members and map keys), for nesting.
    steps: tuple[str, ...] = ()
    #: For a nested filter's property: the shape of one item of the list it names.
    item: Shape | None = None


def record_shape(resource: str) -> Shape | None:
    """botocore's shape of a ``resource``'s search record; None for resources it lacks."""
    member = RECORD_MEMBERS.get(resource)
    if member is None:
        return None
    return _search_record().members.get(member)


def stored_shape(resource: str) -> Shape | None:
    """botocore's shape of the records the store keeps for ``resource``: its search record,
    or the member of it that the Describe document fills (:data:`STORED_UNDER`)."""
    shape = record_shape(resource)
    under = STORED_UNDER.get(resource)
    if shape is None or under is None:
        return shape
    return shape.members[under]


def resolve(resource: str, name: str) -> Field:
    """The property ``name`` of ``resource``'s records, or AWS's ValidationException."""
    shape = record_shape(resource)
    if shape is None:
        raise unknown(resource, name)
    under = STORED_UNDER.get(resource)
    if under is None:
        return resolve_in(resource, shape, name, top=True)
    stored = shape.members[under]
    first, _, rest = name.partition(".")
    if first in shape.members and first != under:
        return resolve_in(resource, shape, name)
    # ``Model.ModelName`` (a path in the stored record, whose columns are its members) or
    # ``ModelName`` (a member of the stored record named alone).
    path = rest if first == under else name
    if not path:
        raise unknown(resource, name)
    try:
        return replace(resolve_in(resource, stored, path, top=True), name=name)
    except ValidationError:
        raise unknown(resource, name) from None


def resolve_in(resource: str, shape: Shape, name: str, *, top: bool = False) -> Field:
    """``name`` below a structure ``shape`` (a record, or an item of a nested list)."""
    parts = name.split(".")
    first = parts[0]
    members = shape.members
    if any(not part for part in parts):
        raise unknown(resource, name)
    if top and first == "Tags" and "Tags" in members:
        return _tag(name, ".".join(parts[1:]))
    if top and first == "Metrics" and "FinalMetricDataList" in members and len(parts) > 1:
        return _metric(name, ".".join(parts[1:]))
    if top and len(parts) == 1 and first in EXTENSIONS.get(resource, ()):
        return Field(name, first, _walker(()), TEXT)
    if first not in members:
        raise unknown(resource, name)
    current = members[first]
    steps: list[str] = []
    kind = ""
    index = 1
    while index < len(parts):
        if current.type_name == "list":
            current = current.member
        elif current.type_name == "structure" and not current.metadata.get("document"):
            part = parts[index]
            if part not in current.members:
                raise unknown(resource, name)
            current, index = current.members[part], index + 1
            steps.append(part)
        elif current.type_name == "map":
            value = current.value
            if value.type_name in ("structure", "list", "map"):
                steps.append(parts[index])
                index += 1
            else:
                # A key may hold dots (tag keys, hyperparameter names): the rest is the key.
                holder = steps[-1] if steps else first
                steps.append(".".join(parts[index:]))
                index = len(parts)
                if holder.endswith("HyperParameters"):
                    kind = HYPERPARAMETER
            current = value
        elif current.metadata.get("document"):
            steps.extend(parts[index:])
            index = len(parts)
            kind = TEXT
        else:
            raise unknown(resource, name)
    item = current.member if current.type_name == "list" else None
    while current.type_name == "list":
        current = current.member
    kind = kind or _LEAF_TYPES.get(current.type_name, OBJECT)
    return Field(name, first, _walker(tuple(steps)), kind, tuple(steps), item)


def unknown(resource: str, name: str) -> ValidationError:
    return ValidationError(
        f"Cannot search {resource} by '{name}': a {resource} has no such property. Name a "
        f"member of its search record (a dotted path, for example "
        f"{_EXAMPLES.get(resource, 'CreationTime')}) or Tags.<key>.")


_EXAMPLES = {"TrainingJob": "ResourceConfig.InstanceType, HyperParameters.<name> or "
                            "Metrics.<name>",
             "ModelPackage": "ModelPackageGroupName or InferenceSpecification.Containers.Image",
             "ModelPackageGroup": "ModelPackageGroupName",
             "Endpoint": "EndpointStatus or ProductionVariants.VariantName",
             "HyperParameterTuningJob": "HyperParameterTuningJobConfig.Strategy",
             "Model": "Model.ModelName, Model.PrimaryContainer.Image or "
                      "Endpoints.EndpointStatus"}


def _tag(name: str, key: str) -> Field:
    if not key:
        return Field(name, "Tags", lambda tags: sorted(tags) if tags else [], TEXT)

    def extract(tags: Any) -> list[Any]:
        return [tags[key]] if tags and key in tags else []

    return Field(name, "Tags", extract, TEXT)


def _metric(name: str, metric: str) -> Field:
    def extract(metrics: Any) -> list[Any]:
        return [m.get("Value") for m in metrics or ()
                if isinstance(m, dict) and m.get("MetricName") == metric]

    return Field(name, "FinalMetricDataList", extract, NUMBER)


def _walker(steps: tuple[str, ...]) -> Extract:
    """The values at ``steps`` below a member's value; lists are walked item by item."""
    if not steps:
        return lambda value: [] if value is None else (
            value if isinstance(value, list) else [value])

    def walk(value: Any) -> list[Any]:
        current = value if isinstance(value, list) else [value]
        for step in steps:
            found: list[Any] = []
            for item in current:
                if isinstance(item, dict):
                    got = item.get(step)
                    if isinstance(got, list):
                        found.extend(got)
                    elif got is not None:
                        found.append(got)
            if not found:
                return found
            current = found
        return current

    return walk


@cache
def _search_record() -> Shape:
    results = operation_model("sagemaker", "Search").output_shape.members["Results"]
    return results.member
