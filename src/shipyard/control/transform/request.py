"""Batch transform jobs, the request: CreateTransformJob checked, its defaults filled in,
and the DescribeTransformJob document it becomes (platform-api.md 3.7, 1.6).

:func:`validate` checks botocore's model first (``control.shapes``: types, required
members, lengths, enums, ranges, the Environment's 16 entries, in AWS's words), then what the
model cannot say: AWS's payload limits (MaxPayloadInMB at most 100, and times
MaxConcurrentTransforms at most 100), the inputs Shipyard reads (S3Prefix and ManifestFile
from s3://, file:// or an absolute path), at most 100 instances, environment values a process
can hold, and DataProcessing filters Shipyard can apply to the formats they read.

The request's names and limits are here for the data side too (``control.transform_data``:
parameters, records, payloads, ``.out`` files).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipyard.contract import names
from shipyard.control.jobs.spec import (
    check_environment,
    check_instance,
    check_output_uri,
)
from shipyard.control.shapes import check_request
from shipyard.control.state import records
from shipyard.control.transform.filters import CSV, JsonPath, format_of
from shipyard.errors import ValidationError

NONE = "None"
LINE = "Line"
RECORDIO = "RecordIO"
TFRECORD = "TFRecord"
MULTI_RECORD = "MultiRecord"
SINGLE_RECORD = "SingleRecord"
GZIP = "Gzip"
JOIN_INPUT = "Input"
#: The S3DataTypes Shipyard reads (not AugmentedManifestFile or Converse).
S3_DATA_TYPES = ("S3Prefix", "ManifestFile")

MIB = 1024 * 1024
#: SageMaker's defaults when neither the request nor ``/execution-parameters`` says (1.6).
DEFAULT_BATCH_STRATEGY = MULTI_RECORD
DEFAULT_MAX_PAYLOAD_IN_MB = 6
DEFAULT_MAX_CONCURRENT_TRANSFORMS = 1
#: MaxPayloadInMB <= 100 and MaxConcurrentTransforms * MaxPayloadInMB <= 100 (the model says
#: only "at least 0").
MAX_PAYLOAD_IN_MB = 100
MAX_TOTAL_PAYLOAD_IN_MB = 100
#: ModelClientConfig's defaults (its ranges, 1-3600 and 0-3, are the model's).
DEFAULT_INVOCATIONS_TIMEOUT_S = 600
DEFAULT_INVOCATIONS_MAX_RETRIES = 3


def validate(request: dict[str, Any]) -> dict[str, Any]:
    """Check a CreateTransformJob request; returns a normalised deep copy.

    Defaults filled in: ``TransformInput.SplitType`` and ``CompressionType`` ``None``, and a
    given ``DataProcessing``'s ``$`` filters and ``JoinSource: None``. BatchStrategy,
    MaxPayloadInMB and MaxConcurrentTransforms stay unset when unset: the container may
    choose them.
    """
    req = check_request("CreateTransformJob", request)
    concurrency = req.get("MaxConcurrentTransforms")
    payload = req.get("MaxPayloadInMB")
    if payload is not None and payload > MAX_PAYLOAD_IN_MB:
        raise names.constraint_error(payload, "maxPayloadInMB", "Member must have value less "
                                     f"than or equal to {MAX_PAYLOAD_IN_MB}")
    if concurrency and payload and concurrency * payload > MAX_TOTAL_PAYLOAD_IN_MB:
        raise ValidationError(
            f"MaxConcurrentTransforms ({concurrency}) multiplied by MaxPayloadInMB ({payload})"
            f" must not exceed {MAX_TOTAL_PAYLOAD_IN_MB} MB")
    check_environment(req.get("Environment"))
    tin = req["TransformInput"]
    s3 = tin["DataSource"]["S3DataSource"]
    check_output_uri(s3["S3Uri"], "TransformInput.DataSource.S3DataSource.S3Uri")
    if s3["S3DataType"] not in S3_DATA_TYPES:
        raise ValidationError(f"S3DataType {s3['S3DataType']} is not supported by Shipyard"
                              f" for transform jobs ({', '.join(S3_DATA_TYPES)})")
    tin.setdefault("CompressionType", NONE)
    tin.setdefault("SplitType", NONE)
    check_output_uri(req["TransformOutput"]["S3OutputPath"], "TransformOutput.S3OutputPath")
    check_instance(req["TransformResources"], "transformResources")
    processing = req.get("DataProcessing")
    if processing is not None:
        for key in ("InputFilter", "OutputFilter"):
            processing.setdefault(key, "$")
        processing.setdefault("JoinSource", NONE)
        DataProcessing.from_record(req)
    return req


def new_record(req: dict[str, Any], arn: str, at: float) -> dict[str, Any]:
    """The DescribeTransformJob document of a validated request, InProgress."""
    record: dict[str, Any] = {
        "TransformJobName": req["TransformJobName"],
        "TransformJobArn": arn,
        "TransformJobStatus": records.IN_PROGRESS,
        "ModelName": req["ModelName"],
        "Environment": dict(req.get("Environment") or {}),
        "TransformInput": req["TransformInput"],
        "TransformOutput": req["TransformOutput"],
        "TransformResources": req["TransformResources"],
        "CreationTime": at,
        "LastModifiedTime": at,
    }
    for optional in ("MaxConcurrentTransforms", "MaxPayloadInMB", "BatchStrategy",
                     "ModelClientConfig", "DataProcessing", "DataCaptureConfig",
                     "ExperimentConfig"):
        if req.get(optional) is not None:
            record[optional] = req[optional]
    return record


def input_source(record: dict[str, Any]) -> tuple[str, str]:
    """``(S3Uri, S3DataType)`` of a validated request or record."""
    s3 = record["TransformInput"]["DataSource"]["S3DataSource"]
    return s3["S3Uri"], s3.get("S3DataType", "S3Prefix")


def host_locations(req: dict[str, Any]) -> list[tuple[str, str]]:
    """``(member, uri)`` of every location of a validated request that names a host path."""
    found = [("TransformInput.DataSource.S3DataSource.S3Uri", input_source(req)[0]),
             ("TransformOutput.S3OutputPath", req["TransformOutput"]["S3OutputPath"])]
    return [(member, uri) for member, uri in found if not uri.startswith("s3://")]


@dataclass(frozen=True)
class DataProcessing:
    """A job's InputFilter, OutputFilter and JoinSource, with the formats they read."""

    input_filter: JsonPath
    output_filter: JsonPath
    join_input: bool
    input_format: str | None
    output_format: str | None

    @property
    def parses_input(self) -> bool:
        return self.join_input or not self.input_filter.identity

    @property
    def rewrites_output(self) -> bool:
        return self.join_input or not self.output_filter.identity

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DataProcessing:
        """Build and check against the formats: raises ``ValidationError`` at creation."""
        spec = record.get("DataProcessing") or {}
        tin, tout = record["TransformInput"], record["TransformOutput"]
        content_type = tin.get("ContentType")
        accept = tout.get("Accept") or content_type
        processing = cls(
            input_filter=JsonPath.parse(spec.get("InputFilter") or "$",
                                        "dataProcessing.inputFilter"),
            output_filter=JsonPath.parse(spec.get("OutputFilter") or "$",
                                         "dataProcessing.outputFilter"),
            join_input=spec.get("JoinSource") == JOIN_INPUT,
            input_format=format_of(content_type),
            output_format=format_of(accept),
        )
        if not (processing.parses_input or processing.rewrites_output):
            return processing
        kinds = "text/csv, application/json or application/jsonlines"
        split_type = tin.get("SplitType") or NONE
        if split_type in (RECORDIO, TFRECORD):
            raise ValidationError(f"DataProcessing filters and joins CSV and JSON records;"
                                  f" SplitType {split_type} carries binary records")
        if processing.parses_input and processing.input_format is None:
            raise ValidationError(f"DataProcessing reads the input records: set"
                                  f" TransformInput.ContentType to {kinds}"
                                  f" (not {content_type!r})")
        if processing.rewrites_output and processing.output_format is None:
            raise ValidationError(f"DataProcessing reads the model's output: set"
                                  f" TransformOutput.Accept to {kinds} (not {accept!r})")
        if processing.join_input and processing.input_format != processing.output_format:
            raise ValidationError(
                f"JoinSource Input joins records of one format: TransformInput.ContentType"
                f" ({content_type}) and TransformOutput.Accept ({accept}) must both be CSV"
                " (text/csv) or both JSON (application/json, application/jsonlines)")
        for key, path, fmt in (("InputFilter", processing.input_filter, processing.input_format),
                               ("OutputFilter", processing.output_filter,
                                processing.output_format)):
            if fmt == CSV and not path.index_only:
                raise ValidationError(
                    f"DataProcessing.{key} {path}: a CSV row is an array, so only index-based"
                    " JSONPaths apply (e.g. $[0], $[1:], $[0,-1])")
        return processing
