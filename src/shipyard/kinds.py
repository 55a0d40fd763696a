"""Every kind of resource Shipyard keeps, declared once.

Pure data, read alike by the client, the CLI, the API (which builds its operation table from
it) and the control plane (which keys its rows, ARNs and log folders by :attr:`Kind.key`).
A new resource is a new :class:`Kind` here plus the module that implements it; nothing else
lists kinds.

SageMaker names every operation, member and summary after the resource
(``CreateTrainingJob``, ``TrainingJobName``, ``TrainingJobSummaries``), so those are derived
from :attr:`Kind.resource` rather than spelled out; only what AWS names irregularly is given.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ALL",
    "ENDPOINT",
    "ENDPOINT_CONFIG",
    "ENDPOINT_LOG_GROUP_PREFIX",
    "JOBS",
    "MODEL",
    "MODEL_PACKAGE",
    "MODEL_PACKAGE_GROUP",
    "PROCESSING",
    "TRAINING",
    "TRANSFORM",
    "TUNING",
    "Kind",
    "by_log_group",
    "get",
]

#: Filters every job List operation and ListEndpoints model (botocore's service model).
_ALL_FILTERS = frozenset({"StatusEquals", "NameContains", "CreationTimeAfter",
                          "CreationTimeBefore", "LastModifiedTimeAfter",
                          "LastModifiedTimeBefore"})
_CREATION_FILTERS = frozenset({"NameContains", "CreationTimeAfter", "CreationTimeBefore"})
#: One log group per endpoint, ``/aws/sagemaker/Endpoints/<name>``, as on AWS.
ENDPOINT_LOG_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"


@dataclass(frozen=True)
class Kind:
    #: How the control plane keys it: rows, log folders, container labels, locks.
    key: str
    #: The resource's name in SageMaker's operations: ``Create<resource>``.
    resource: str
    #: The resource type in its ARN: ``arn:aws:sagemaker:<region>:<account>:<arn_type>/<name>``.
    arn_type: str
    #: How AWS's messages name one ("training job", "endpoint configuration").
    label: str
    #: The record's status member; empty for kinds that have none (their rows say Created).
    status_field: str
    #: What ``List<resource>s`` returns: its member and the fields of each summary.
    summaries: str
    summary_fields: tuple[str, ...]
    #: The List operation's filter members (others are ignored, as unknown members are).
    list_filters: frozenset[str]
    #: Sort order when a List request gives none: botocore's model says, per operation.
    list_descending: bool
    stoppable: bool = False
    deletable: bool = False
    #: The CloudWatch log group of its jobs' streams (one group for the kind), if any.
    log_group: str | None = None
    #: The record member a stream's name takes its epoch from (else ``CreationTime``).
    start_field: str = "CreationTime"
    #: What a List request with no ``SortBy`` sorts by (botocore's model says, per operation).
    default_sort: str = "CreationTime"

    @property
    def name_field(self) -> str:
        return f"{self.resource}Name"

    @property
    def arn_field(self) -> str:
        return f"{self.resource}Arn"

    @property
    def is_job(self) -> bool:
        return self.stoppable

    def arn(self, name: str, region: str, account: str) -> str:
        """``arn:aws:sagemaker:<region>:<account>:training-job/<name>``; AWS lowercases names."""
        return f"arn:aws:sagemaker:{region}:{account}:{self.arn_type}/{name.lower()}"

    def operation(self, verb: str) -> str:
        """``operation("Create")`` -> ``CreateTrainingJob``; ``List`` takes the plural."""
        return f"{verb}{self.resource}s" if verb == "List" else f"{verb}{self.resource}"


def _job(key: str, resource: str, end_field: str, extra: tuple[str, ...],
         descending: bool) -> Kind:
    return Kind(
        key=key, resource=resource, arn_type=key + "-job", label=f"{key} job",
        status_field=f"{resource}Status", summaries=f"{resource}Summaries",
        summary_fields=(f"{resource}Name", f"{resource}Arn", "CreationTime", end_field,
                        "LastModifiedTime", f"{resource}Status", *extra),
        list_filters=_ALL_FILTERS, list_descending=descending, stoppable=True,
        log_group=f"/aws/sagemaker/{resource}s", start_field=f"{key.capitalize()}StartTime")


TRAINING = _job("training", "TrainingJob", "TrainingEndTime", ("SecondaryStatus",), False)
PROCESSING = _job("processing", "ProcessingJob", "ProcessingEndTime",
                  ("FailureReason", "ExitMessage"), False)
TRANSFORM = _job("transform", "TransformJob", "TransformEndTime", ("FailureReason",), True)
MODEL = Kind(
    key="model", resource="Model", arn_type="model", label="model", status_field="",
    summaries="Models", summary_fields=("ModelName", "ModelArn", "CreationTime"),
    list_filters=_CREATION_FILTERS, list_descending=True, deletable=True)
ENDPOINT_CONFIG = Kind(
    key="endpoint-config", resource="EndpointConfig", arn_type="endpoint-config",
    label="endpoint configuration", status_field="", summaries="EndpointConfigs",
    summary_fields=("EndpointConfigName", "EndpointConfigArn", "CreationTime"),
    list_filters=_CREATION_FILTERS, list_descending=True, deletable=True)
ENDPOINT = Kind(
    key="endpoint", resource="Endpoint", arn_type="endpoint", label="endpoint",
    status_field="EndpointStatus", summaries="Endpoints",
    summary_fields=("EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime",
                    "EndpointStatus"),
    list_filters=_ALL_FILTERS, list_descending=True, deletable=True)

#: Hyperparameter tuning jobs: each trial is a training job; the tuning job has no log.
TUNING = Kind(
    key="tuning", resource="HyperParameterTuningJob", arn_type="hyper-parameter-tuning-job",
    label="hyperparameter tuning job", status_field="HyperParameterTuningJobStatus",
    summaries="HyperParameterTuningJobSummaries",
    summary_fields=("HyperParameterTuningJobName", "HyperParameterTuningJobArn",
                    "HyperParameterTuningJobStatus", "Strategy", "CreationTime",
                    "HyperParameterTuningEndTime", "LastModifiedTime",
                    "TrainingJobStatusCounters", "ObjectiveStatusCounters", "ResourceLimits"),
    list_filters=_ALL_FILTERS, list_descending=False, stoppable=True, default_sort="Name")

#: The model registry (``control/registry``): groups of versioned packages, and packages
#: (versioned in a group, or standalone). Rows are keyed by the lower-cased name their ARN
#: ends with (``<group>/<version>`` for a version), so a name or an ARN finds one row.
MODEL_PACKAGE_GROUP = Kind(
    key="model-package-group", resource="ModelPackageGroup", arn_type="model-package-group",
    label="model package group", status_field="ModelPackageGroupStatus",
    summaries="ModelPackageGroupSummaryList",
    summary_fields=("ModelPackageGroupName", "ModelPackageGroupArn",
                    "ModelPackageGroupDescription", "CreationTime", "ModelPackageGroupStatus"),
    list_filters=_CREATION_FILTERS, list_descending=False, deletable=True)
MODEL_PACKAGE = Kind(
    key="model-package", resource="ModelPackage", arn_type="model-package",
    label="model package", status_field="ModelPackageStatus",
    summaries="ModelPackageSummaryList",
    summary_fields=("ModelPackageName", "ModelPackageGroupName", "ModelPackageVersion",
                    "ModelPackageArn", "ModelPackageDescription", "CreationTime",
                    "ModelPackageStatus", "ModelApprovalStatus", "ModelLifeCycle",
                    "ModelPackageRegistrationType"),
    list_filters=_CREATION_FILTERS | {"ModelApprovalStatus", "ModelPackageGroupName",
                                      "ModelPackageType"},
    list_descending=False, deletable=True)

ALL: tuple[Kind, ...] = (TRAINING, PROCESSING, TRANSFORM, TUNING, MODEL, ENDPOINT_CONFIG,
                         ENDPOINT, MODEL_PACKAGE_GROUP, MODEL_PACKAGE)
#: The run-to-completion kinds, in the order ``shipyard jobs`` looks a name up.
JOBS: tuple[Kind, ...] = tuple(k for k in ALL if k.is_job)
_BY_KEY = {k.key: k for k in ALL}
_BY_GROUP = {k.log_group: k for k in ALL if k.log_group}


def get(key: str) -> Kind:
    """The kind keyed ``key``; KeyError names the kinds there are."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"no kind {key!r} (kinds: {', '.join(_BY_KEY)})") from None


def by_log_group(group: str) -> Kind | None:
    """The job kind whose streams ``group`` holds (not endpoints': see the prefix)."""
    return _BY_GROUP.get(group)
