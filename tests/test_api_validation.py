"""Request validation against botocore's real service models, in AWS's own words: the
checker (``control.shapes``), the body parser (``api.validation``) and the control plane's
door (``shapes.check_request``).

Expected messages are copied from real AWS answers where one was published (sources in
docs/api-validation.md); requests are built with botocore's real serializer.
"""

from __future__ import annotations

import functools
import json
import math
import re
import subprocess
import sys
import time
from typing import Any

import botocore.session
import pytest
from botocore.model import OperationModel, Shape
from botocore.serialize import create_serializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.api import validation
from shipyard.api.validation import parse_json_body
from shipyard.control import CHECKED_AT_DOOR
from shipyard.control.shapes import (
    check_request,
    compile_java_pattern,
    operation_model,
    skipped_patterns,
    validate,
)
from shipyard.errors import (
    InvalidParameter,
    SerializationError,
    UnknownOperation,
    ValidationError,
)

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BASE = {"TrainingJobName": "myjob-3", "RoleArn": ROLE,
        "OutputDataConfig": {"S3OutputPath": "s3://bkt3/out"}}
# What SDK v2's Estimator.fit() sends (platform-api.md 5.2), plus tags.
SDK_CREATE_TRAINING_JOB: dict[str, Any] = {
    **BASE,
    "AlgorithmSpecification": {
        "TrainingInputMode": "File",
        "TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
        "MetricDefinitions": [{"Name": "loss", "Regex": "loss=([0-9\\.]+)"}]},
    "ResourceConfig": {"VolumeSizeInGB": 30, "InstanceCount": 1, "InstanceType": "ml.m5.large"},
    "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
    "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": "s3://bkt3/data",
        "S3DataDistributionType": "FullyReplicated"}}}],
    "HyperParameters": {"epochs": "3", "lr": "0.1",
                        "sagemaker_program": "\"train.py\"",
                        "sagemaker_submit_directory": "\"s3://bkt3/myjob-3/source/sourcedir.tar.gz\""},
    "DebugHookConfig": {"S3OutputPath": "s3://bkt3/out", "CollectionConfigurations": []},
    "ProfilerConfig": {"S3OutputPath": "s3://bkt3/out", "DisableProfiler": False},
    "Tags": [{"Key": "team", "Value": "ml"}],
}
IMPLEMENTED = {
    "sagemaker": ["CreateTrainingJob", "DescribeTrainingJob", "ListTrainingJobs",
                  "StopTrainingJob", "CreateProcessingJob", "DescribeProcessingJob",
                  "ListProcessingJobs", "StopProcessingJob", "AddTags", "ListTags", "DeleteTags"],
    "logs": ["DescribeLogStreams", "GetLogEvents", "FilterLogEvents"],
}
CASES = [(service, op) for service, ops in IMPLEMENTED.items() for op in ops]


def message_of(service: str, operation: str, params: dict[str, Any]) -> str:
    with pytest.raises((ValidationError, InvalidParameter)) as info:
        validate(service, operation, params)
    return info.value.message


def wire_body(operation: str, params: dict[str, Any], service: str = "sagemaker") -> bytes:
    """The bytes botocore's own JSON serializer puts on the wire for ``params``."""
    model = botocore.session.get_session().get_service_model(service)
    request = create_serializer("json").serialize_to_request(
        params, model.operation_model(operation))
    body: bytes = request["body"]
    return body


# ------------------------------------------------------------------ AWS's examples


def test_bad_training_job_name_reads_as_aws_writes_it() -> None:
    # AWS: "Value '<v>' at 'trainingJobName' failed to satisfy constraint: Member must satisfy
    # regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])..." (platform-api.md 3.1, with
    # today's pattern from the model).
    assert message_of("sagemaker", "CreateTrainingJob", {**BASE, "TrainingJobName": "my_job"}) == (
        "1 validation error detected: Value 'my_job' at 'trainingJobName' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: "
        "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


def test_enum_violation_lists_the_model_values() -> None:
    # "local" (SDK local mode's name) is Shipyard's one addition to the enum, not listed in it.
    validate("sagemaker", "CreateTrainingJob", {**BASE, "ResourceConfig": {
        "InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 30}})
    params = {**BASE, "ResourceConfig": {"InstanceType": "ml.bogus.large", "InstanceCount": 1,
                                         "VolumeSizeInGB": 30}}
    instance_types = operation_model("sagemaker", "CreateTrainingJob").input_shape.members[
        "ResourceConfig"].members["InstanceType"].enum
    assert "ml.m5.large" in instance_types
    assert message_of("sagemaker", "CreateTrainingJob", params) == (
        "1 validation error detected: Value 'ml.bogus.large' at 'resourceConfig.instanceType' "
        "failed to "
        f"satisfy constraint: Member must satisfy enum value set: [{', '.join(instance_types)}]")


def test_missing_required_members_are_null_in_model_order() -> None:
    assert message_of("sagemaker", "CreateTrainingJob", {}) == (
        "3 validation errors detected: "
        "Value null at 'trainingJobName' failed to satisfy constraint: Member must not be null; "
        "Value null at 'roleArn' failed to satisfy constraint: Member must not be null; "
        "Value null at 'outputDataConfig' failed to satisfy constraint: Member must not be null")


def test_one_value_breaking_length_and_pattern_is_two_errors() -> None:
    # Same shape as AWS's answer for a bad modelName: length first, then the pattern, "; " between.
    name = "x" * 63 + "_"
    assert message_of("sagemaker", "CreateTrainingJob", {**BASE, "TrainingJobName": name}) == (
        f"2 validation errors detected: Value '{name}' at 'trainingJobName' failed to satisfy "
        "constraint: Member must have length less than or equal to 63; "
        f"Value '{name}' at 'trainingJobName' failed to satisfy constraint: Member must satisfy "
        "regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


def test_list_items_are_numbered_from_one_with_member() -> None:
    good = {"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": "s3://b/d"}}}
    bad = {"ChannelName": "bad name", "DataSource": {"S3DataSource": {
        "S3DataType": "Nope", "S3Uri": "s3://b/d"}}}
    params = {**BASE, "InputDataConfig": [good, bad, {"ChannelName": "x"}]}
    assert message_of("sagemaker", "CreateTrainingJob", params) == (
        "3 validation errors detected: "
        "Value 'bad name' at 'inputDataConfig.2.member.channelName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: [A-Za-z0-9\\.\\-_]+; "
        "Value 'Nope' at 'inputDataConfig.2.member.dataSource.s3DataSource.s3DataType' failed to "
        "satisfy constraint: Member must satisfy enum value set: "
        "[ManifestFile, S3Prefix, AugmentedManifestFile, Converse]; "
        "Value null at 'inputDataConfig.3.member.dataSource' failed to satisfy constraint: "
        "Member must not be null")


def test_map_value_rules_are_listed_once_as_aws_does() -> None:
    # AWS (aws-samples/amazon-sagemaker-pytorch-detectron2#10): "'hyperParameters' failed to
    # satisfy constraint: Map value must satisfy constraint: [Member must have length less than
    # or equal to 2500, Member must have length greater than or equal to 0, Member must satisfy
    # regular expression pattern: .*]"
    long_value = "v" * 2501
    params = {**BASE, "HyperParameters": {"classes": long_value, "other": long_value, "lr": "1"}}
    assert message_of("sagemaker", "CreateTrainingJob", params) == (
        f"1 validation error detected: Value '{{classes={long_value}, other={long_value}, lr=1}}' "
        "at 'hyperParameters' failed to satisfy constraint: Map value must satisfy constraint: "
        "[Member must have length less than or equal to 2500, Member must have length greater "
        "than or equal to 0, Member must satisfy regular expression pattern: .*]")


def test_map_key_rules_come_before_value_rules() -> None:
    params = {**BASE, "Environment": {"1bad": "v", "OK": "x" * 513}}
    message = message_of("sagemaker", "CreateTrainingJob", params)
    assert message.startswith("2 validation errors detected: Value '{1bad=v, OK=xxx")
    keys, values = message.split("; ")
    assert keys.endswith("at 'environment' failed to satisfy constraint: Map keys must satisfy "
                         "constraint: [Member must have length less than or equal to 512, Member "
                         "must have length greater than or equal to 0, Member must satisfy "
                         "regular expression pattern: [a-zA-Z_][a-zA-Z0-9_]*]")
    assert "Map value must satisfy constraint: [Member must have length less than or equal to 512" \
        in values


def test_list_of_strings_is_reported_once_with_its_item_rules() -> None:
    params = {**BASE, "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["bad_1", "ok"]}}
    assert message_of("sagemaker", "CreateTrainingJob", params) == (
        "1 validation error detected: Value '[bad_1, ok]' at 'vpcConfig.subnets' failed to satisfy "
        "constraint: Member must satisfy constraint: [Member must have length less than or equal "
        "to 32, Member must have length greater than or equal to 0, Member must satisfy regular "
        "expression pattern: [-0-9a-zA-Z]+]")


def test_null_list_item_is_not_null_at_its_index() -> None:
    params = {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/j",
              "Tags": [{"Key": "a!", "Value": "b"}, None]}
    assert message_of("sagemaker", "AddTags", params) == (
        "2 validation errors detected: Value 'a!' at 'tags.1.member.key' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: "
        "^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$; "
        "Value null at 'tags.2.member' failed to satisfy constraint: Member must not be null")


def test_list_length_counts_items() -> None:
    channels = [{"ChannelName": f"c{i}", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": "s3://b/d"}}} for i in range(21)]
    message = message_of("sagemaker", "CreateTrainingJob", {**BASE, "InputDataConfig": channels})
    assert message.startswith("1 validation error detected: Value '[{ChannelName=c0, DataSource=")
    assert message.endswith("at 'inputDataConfig' failed to satisfy constraint: "
                            "Member must have length less than or equal to 20")


@pytest.mark.parametrize(("params", "expected"), [
    ({"StoppingCondition": {"MaxRuntimeInSeconds": 0}},
     "Value '0' at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: "
     "Member must have value greater than or equal to 1"),
    ({"RetryStrategy": {"MaximumRetryAttempts": 31}},
     "Value '31' at 'retryStrategy.maximumRetryAttempts' failed to satisfy constraint: "
     "Member must have value less than or equal to 30"),
    ({"ResourceConfig": {"InstanceCount": 1, "VolumeSizeInGB": 1, "InstanceType": "ml.m5.large",
                         "KeepAlivePeriodInSeconds": 21601}},
     "Value '21601' at 'resourceConfig.keepAlivePeriodInSeconds' failed to satisfy constraint: "
     "Member must have value less than or equal to 3600"),
], ids=["min", "max", "nested-max"])
def test_number_ranges(params: dict[str, Any], expected: str) -> None:
    limit = operation_model("sagemaker", "CreateTrainingJob").input_shape.members[
        "ResourceConfig"].members["KeepAlivePeriodInSeconds"].metadata["max"]
    expected = expected.replace("3600", str(limit))
    assert message_of("sagemaker", "CreateTrainingJob", {**BASE, **params}) == (
        f"1 validation error detected: {expected}")


def test_number_past_its_java_type_is_not_echoed() -> None:
    # Measured on Athena (MaxResults 99999999999): "Value at 'maxResults' failed to ..."
    assert message_of("sagemaker", "ListTrainingJobs", {"MaxResults": 99999999999}) == (
        "1 validation error detected: Value at 'maxResults' failed to satisfy constraint: "
        "Member must have value less than or equal to 100")
    with pytest.raises(SerializationError):  # out of a Long, no bound to name: unreadable
        validate("sagemaker", "CreateTrainingJob",
                 {**BASE, "InputDataConfig": [{"ChannelName": "c", "ShuffleConfig": {
                     "Seed": 2**64}, "DataSource": {"S3DataSource": {
                         "S3DataType": "S3Prefix", "S3Uri": "s3://b/d"}}}]})


def test_logs_answers_invalid_parameter_exception() -> None:
    # AWS: "An error occurred (InvalidParameterException) when calling the DescribeLogStreams
    # operation: 1 validation error detected: Value 'C:/Program Files/Git/aws/lambda/funcname'
    # at 'logGroupName' failed to satisfy constraint: Member must satisfy regular expression
    # pattern: [\.\-_/#A-Za-z0-9]+"
    params = {"logGroupName": "C:/Program Files/Git/aws/lambda/funcname"}
    with pytest.raises(InvalidParameter) as info:
        validate("logs", "DescribeLogStreams", params)
    assert info.value.code == "InvalidParameterException"
    assert info.value.message == (
        "1 validation error detected: Value 'C:/Program Files/Git/aws/lambda/funcname' at "
        "'logGroupName' failed to satisfy constraint: Member must satisfy regular expression "
        "pattern: [\\.\\-_/#A-Za-z0-9]+")


def test_local_data_locations_are_shipyards_one_extension() -> None:
    for uri in ("file:///data/train", "/data/train", "s3://bkt/data", "https://bkt.s3/data"):
        channel = {"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": uri}}}
        validate("sagemaker", "CreateTrainingJob", {**BASE, "InputDataConfig": [channel],
                                                    "OutputDataConfig": {"S3OutputPath": uri}})
    assert message_of("sagemaker", "CreateTrainingJob", {
        **BASE, "OutputDataConfig": {"S3OutputPath": "ftp://host/out"}}) == (
        "1 validation error detected: Value 'ftp://host/out' at 'outputDataConfig.s3OutputPath' "
        "failed to satisfy constraint: Member must satisfy regular expression pattern: "
        "^(https|s3)://([^/]+)/?(.*)$")


# ------------------------------------------------------------------ JSON types


@pytest.mark.parametrize(("params", "expected"), [
    ({"MaxResults": "10"}, "STRING_VALUE can not be converted to an Integer"),
    ({"MaxResults": True}, "TRUE_VALUE can not be converted to an Integer"),
    ({"MaxResults": 1.5}, "NUMBER_VALUE can not be converted to an Integer"),
    ({"MaxResults": [1]}, "Start of list found where not expected"),
    ({"MaxResults": {"a": 1}}, "Start of structure or map found where not expected."),
    ({"NameContains": 1}, "NUMBER_VALUE can not be converted to a String"),
    ({"NameContains": False}, "FALSE_VALUE can not be converted to a String"),
    ({"CreationTimeAfter": "yesterday"}, "STRING_VALUE can not be converted to a Timestamp"),
    ({"CreationTimeAfter": True}, "TRUE_VALUE can not be converted to a Timestamp"),
    # A type error wins over every constraint, wherever it is (measured on Athena).
    ({"MaxResults": "10", "NameContains": "x" * 1000},
     "STRING_VALUE can not be converted to an Integer"),
], ids=lambda v: str(v)[:40])
def test_wrong_json_types_are_serialization_errors(params: dict[str, Any], expected: str) -> None:
    with pytest.raises(SerializationError) as info:
        validate("sagemaker", "ListTrainingJobs", params)
    assert info.value.code == "SerializationException"
    assert info.value.message == expected


@pytest.mark.parametrize(("params", "expected"), [
    ({"InputDataConfig": "x"}, "Expected list or null"),
    ({"HyperParameters": []}, "Start of list found where not expected"),
    ({"HyperParameters": 3}, "Expected map or null"),
    ({"OutputDataConfig": "x"}, "Expected null"),
    ({"EnableNetworkIsolation": "true"}, "STRING_VALUE can not be converted to a Boolean"),
    ({"InputDataConfig": [{}, 5]}, "Expected null"),
], ids=lambda v: str(v)[:40])
def test_containers_of_the_wrong_type(params: dict[str, Any], expected: str) -> None:
    with pytest.raises(SerializationError) as info:
        validate("sagemaker", "CreateTrainingJob", {**BASE, **params})
    assert info.value.message == expected


def test_timestamps_take_epoch_seconds_or_iso_strings() -> None:
    for value in (1704067200, 1529870369.986, "2024-01-01T00:00:00Z", "2024-01-01T00:00:00+02:00"):
        validate("sagemaker", "ListTrainingJobs", {"CreationTimeAfter": value})
    with pytest.raises(SerializationError):
        validate("sagemaker", "ListTrainingJobs", {"CreationTimeAfter": 10**20})


def test_null_and_unknown_members_count_as_absent() -> None:
    params = parse_json_body(b'{"TrainingJobName": "j", "Foo": {"bar": [1]}, "Extra": null}')
    assert params == {"TrainingJobName": "j", "Foo": {"bar": [1]}}
    validate("sagemaker", "DescribeTrainingJob", params)
    validate("sagemaker", "ListTrainingJobs", {"MaxResults": None, "NextToken": None})
    assert message_of("sagemaker", "DescribeTrainingJob", {"TrainingJobName": None}) == (
        "1 validation error detected: Value null at 'trainingJobName' failed to satisfy "
        "constraint: Member must not be null")


# ------------------------------------------------------------------ what real clients send


def test_the_sdk_request_passes_as_botocore_serializes_it() -> None:
    params = parse_json_body(wire_body("CreateTrainingJob", SDK_CREATE_TRAINING_JOB))
    assert params["TrainingJobName"] == "myjob-3"
    validate("sagemaker", "CreateTrainingJob", params)
    list_body = wire_body("ListTrainingJobs", {"CreationTimeAfter": 1704067200, "MaxResults": 5,
                                               "SortBy": "CreationTime", "StatusEquals": "Completed"})
    validate("sagemaker", "ListTrainingJobs", parse_json_body(list_body))
    logs_body = wire_body("DescribeLogStreams", {
        "logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamNamePrefix": "myjob-1/",
        "orderBy": "LogStreamName", "limit": 1}, service="logs")
    validate("logs", "DescribeLogStreams", parse_json_body(logs_body))


def test_botocore_without_client_validation_is_caught_server_side() -> None:
    # botocore checks required/min/types only; a too-long name reaches the server.
    params = {**BASE, "TrainingJobName": "a" * 64}
    message = message_of("sagemaker", "CreateTrainingJob",
                         parse_json_body(wire_body("CreateTrainingJob", params)))
    # The pattern bounds the length too ({0,62}), so AWS names both rules.
    assert message.startswith("2 validation errors detected: ")
    assert "Member must have length less than or equal to 63; " in message


# ------------------------------------------------------------------ resource names


@pytest.mark.parametrize(
    "name",
    ["a", "A", "7", "my-job", "a--b", "Job-2024-01-01-12-00-00-123", "a" * 63,
     "a" + "-" * 61 + "b"],
    ids=["one-letter", "upper", "digit", "hyphen", "double-hyphen", "sdk-style", "63-chars",
         "63-with-hyphens"],
)
def test_job_names_sagemaker_accepts(name: str) -> None:
    validate("sagemaker", "CreateTrainingJob", {**BASE, "TrainingJobName": name})


@pytest.mark.parametrize(
    "name",
    ["my_job", "-job", "job-", "job.1", "job name", "a" * 64, "ä", ""],
    ids=["underscore", "leading-hyphen", "trailing-hyphen", "dot", "space", "64-chars",
         "non-ascii", "empty"],
)
def test_job_names_sagemaker_refuses(name: str) -> None:
    message = message_of("sagemaker", "CreateProcessingJob", {"ProcessingJobName": name})
    assert re.match(r"[0-9]+ validation errors? detected: Value '", message), message
    assert f"Value '{name}' at 'processingJobName' failed to satisfy constraint: Member must "\
        "satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}" in message


def test_a_name_of_hyphens_is_still_limited_to_63_characters() -> None:
    # The pattern alone lets runs of hyphens through at any length; the model caps names at 63.
    name = "a" + "-" * 62 + "b"
    assert message_of("sagemaker", "CreateTrainingJob", {**BASE, "TrainingJobName": name}) == (
        f"1 validation error detected: Value '{name}' at 'trainingJobName' failed to satisfy "
        "constraint: Member must have length less than or equal to 63")


def test_channel_names_and_environment_keys() -> None:
    def channel(name: str) -> dict[str, Any]:
        return {**BASE, "InputDataConfig": [{"ChannelName": name, "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/d"}}}]}

    validate("sagemaker", "CreateTrainingJob", channel("train_2.v-1"))
    assert "inputDataConfig.1.member.channelName" in message_of(
        "sagemaker", "CreateTrainingJob", channel("a/b"))
    assert "less than or equal to 64" in message_of(
        "sagemaker", "CreateTrainingJob", channel("c" * 65))
    validate("sagemaker", "CreateTrainingJob", {**BASE, "Environment": {"MY_VAR_1": "x"}})
    assert message_of("sagemaker", "CreateTrainingJob", {**BASE, "Environment": {
        "1BAD": "x"}}) == (
        "1 validation error detected: Value '{1BAD=x}' at 'environment' failed to satisfy "
        "constraint: Map keys must satisfy constraint: [Member must have length less than or "
        "equal to 512, Member must have length greater than or equal to 0, Member must satisfy "
        "regular expression pattern: [a-zA-Z_][a-zA-Z0-9_]*]")


# ------------------------------------------------------------------ the control plane's door


def test_the_door_returns_a_copy_without_nulls() -> None:
    request = {**SDK_CREATE_TRAINING_JOB, "VpcConfig": None,
               "ResourceConfig": {**SDK_CREATE_TRAINING_JOB["ResourceConfig"],
                                  "VolumeKmsKeyId": None}}
    checked = check_request("CreateTrainingJob", request)
    assert "VpcConfig" not in checked and "VolumeKmsKeyId" not in checked["ResourceConfig"]
    checked["ResourceConfig"]["InstanceCount"] = 2
    checked["InputDataConfig"][0]["ChannelName"] = "changed"
    assert request["ResourceConfig"]["InstanceCount"] == 1, "the caller's request is not changed"
    assert request["InputDataConfig"][0]["ChannelName"] == "train"
    assert request["VpcConfig"] is None


def test_the_door_answers_in_aws_words() -> None:
    with pytest.raises(ValidationError) as info:
        check_request("CreateEndpoint", {"EndpointName": "e_1"})
    assert info.value.message == (
        "2 validation errors detected: Value 'e_1' at 'endpointName' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: "
        "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}; Value null at 'endpointConfigName' failed to "
        "satisfy constraint: Member must not be null")
    with pytest.raises(SerializationError, match="^STRING_VALUE can not be converted to an "
                       "Integer$"):
        check_request("CreateTransformJob", {"MaxPayloadInMB": "6"})
    # Only a Python caller can hand over something that is not an object.
    with pytest.raises(ValidationError, match="^CreateModel request must be a JSON object, "
                       "not list$"):
        check_request("CreateModel", [])  # type: ignore[arg-type]


def test_only_checks_the_members_named() -> None:
    # The API checks just the tags of the operations the plane checks at its door.
    assert {"CreateTrainingJob", "CreateEndpoint", "UpdateEndpoint"} <= CHECKED_AT_DOOR
    validate("sagemaker", "CreateTrainingJob", {"TrainingJobName": "bad_name"}, only=["Tags"])
    with pytest.raises(ValidationError) as info:
        validate("sagemaker", "CreateTrainingJob",
                 {"TrainingJobName": "bad_name", "Tags": [{"Key": "a!", "Value": "b"}, {}]},
                 only=["Tags"])
    assert info.value.message == (
        "3 validation errors detected: Value 'a!' at 'tags.1.member.key' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: "
        "^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$; "
        "Value null at 'tags.2.member.key' failed to satisfy constraint: Member must not be null; "
        "Value null at 'tags.2.member.value' failed to satisfy constraint: Member must not be "
        "null")
    validate("sagemaker", "UpdateEndpoint", {}, only=["Tags"])  # it has none


def test_the_api_module_serves_the_same_checker() -> None:
    assert validation.validate is validate
    assert validation.operation_model is operation_model


# ------------------------------------------------------------------ parsing and routing


@pytest.mark.parametrize(("body", "expected"), [
    (b"", {}), (b"  \n", {}), (b"{}", {}), (b'{"a": [1, {"b": null}]}', {"a": [1, {}]}),
], ids=["empty", "blank", "object", "nested-null"])
def test_parse_json_body_reads_objects(body: bytes, expected: dict[str, Any]) -> None:
    assert parse_json_body(body) == expected


@pytest.mark.parametrize(("body", "expected"), [
    (b"{", ""), (b"null", ""), (b'"x"', ""), (b"12", ""), (b'{"MaxResults": 1,}', ""),
    (b'{"a": NaN}', ""), (b'{"a": Infinity}', ""), (b"\xff\xfe{}", ""),
    (b"[" * 100_000 + b"]" * 100_000, ""),  # too deep to read: malformed
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, ""), (b"1" * 5000, ""),
    (b"[]", "Start of list found where not expected"),
], ids=["truncated", "null", "string", "number", "trailing-comma", "nan", "infinity",
        "not-utf8", "deep-list", "deep-object", "huge-int", "list"])
def test_parse_json_body_refuses_what_aws_refuses(body: bytes, expected: str) -> None:
    with pytest.raises(SerializationError) as info:
        parse_json_body(body)
    assert info.value.code == "SerializationException"
    assert info.value.http_status == 400
    assert info.value.message == expected


def test_operation_model_is_botocores() -> None:
    model = operation_model("sagemaker", "CreateTrainingJob")
    assert isinstance(model, OperationModel)
    assert model.name == "CreateTrainingJob"
    assert model.input_shape.required_members == ["TrainingJobName", "RoleArn", "OutputDataConfig"]
    assert operation_model("logs", "GetLogEvents").service_model.metadata["targetPrefix"] == (
        "Logs_20140328")


@pytest.mark.parametrize(("service", "operation"), [
    ("sagemaker", "Nope"), ("sagemaker", "createTrainingJob"), ("sagemaker", ""),
    ("logs", "CreateTrainingJob"), ("no-such-service", "CreateTrainingJob"),
])
def test_unknown_operations(service: str, operation: str) -> None:
    # AWS answers {"__type": "UnknownOperationException"} (400) with no message.
    with pytest.raises(UnknownOperation) as info:
        operation_model(service, operation)
    assert (info.value.code, info.value.http_status, info.value.message) == (
        "UnknownOperationException", 400, "")
    with pytest.raises(UnknownOperation):
        validate(service, operation, {})


# ------------------------------------------------------------------ Java patterns in Python


@pytest.mark.parametrize(("pattern", "accepted", "refused"), [
    (".*", ["", "any thing"], ["a\nb", "a\rb", "a\u2028b"]),
    ("[\\w-_]*", ["a-b_c9"], ["é", "a b"]),
    ("^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$", ["héllo wörld 42", "日本"], ["a!b", "a\tb"]),
    ("[\\p{L}\\p{M}\\p{Z}\\p{S}\\p{N}\\p{P}]*", ["façade, 1+1=2 😀"], ["a\u0000b"]),
    ("arn:[\\p{Alnum}\\-]+:lambda:.*", ["arn:aws-cn:lambda:x"], ["arn:é:lambda:x"]),
    ("[\\u0020-\\uD7FF\\uE000-\\uFFFD\\uD800\\uDC00-\\uDBFF\\uDFFF\\t]*", ["ok 😀\t"], ["\u0001"]),
    ("([\\p{L}\\p{Z}\\p{N}_.:\\/=+\\-@]*)${1,256}", ["a b"], ["a!"]),
    ("\\d+", ["123"], ["١٢٣"]),  # Java's \d is ASCII
], ids=["dot", "dash-after-class", "categories", "printable", "posix", "surrogates",
        "quantified-dollar", "ascii-digits"])
def test_java_patterns_keep_java_meaning(pattern: str, accepted: list[str],
                                         refused: list[str]) -> None:
    compiled = compile_java_pattern(pattern)
    assert compiled is not None
    for text in accepted:
        assert compiled.fullmatch(text), text
    for text in refused:
        assert not compiled.fullmatch(text), text


def test_patterns_python_cannot_run_are_skipped_and_recorded() -> None:
    assert compile_java_pattern("[a-z&&[^b]]+") is None
    assert compile_java_pattern("[a-z0-9]([-a-z0-9]*[a-z0-9]){0,39}?") is None
    assert "[a-z&&[^b]]+" in skipped_patterns()


def _reachable(shape: Shape, seen: dict[str, Shape]) -> dict[str, Shape]:
    if shape.name not in seen:
        seen[shape.name] = shape
        if shape.type_name == "structure":
            for member in shape.members.values():
                _reachable(member, seen)
        elif shape.type_name == "list":
            _reachable(shape.member, seen)
        elif shape.type_name == "map":
            _reachable(shape.key, seen)
            _reachable(shape.value, seen)
    return seen


@pytest.mark.parametrize(("service", "operation"), CASES)
def test_every_pattern_served_compiles_and_cannot_be_made_slow(service: str,
                                                               operation: str) -> None:
    shapes = _reachable(operation_model(service, operation).input_shape, {})
    for shape in shapes.values():
        pattern = shape.metadata.get("pattern")
        if pattern is None:
            continue
        compiled = compile_java_pattern(pattern)
        assert compiled is not None, (shape.name, pattern, skipped_patterns().get(pattern))
        size = 4 * shape.metadata["max"] if "max" in shape.metadata else 1 << 16
        for unit in ("a", "a-", "1", "a.", "/", " ", "arn:aws:", "a1"):
            probe = (unit * size)[: size - 1] + "!"
            started = time.perf_counter()
            compiled.fullmatch(probe)
            assert time.perf_counter() - started < 0.05, (shape.name, pattern, unit)


# ------------------------------------------------------------------ speed


def test_validation_is_fast() -> None:
    create = parse_json_body(wire_body("CreateTrainingJob", SDK_CREATE_TRAINING_JOB))
    describe = {"TrainingJobName": "myjob-3"}
    validate("sagemaker", "CreateTrainingJob", create)  # model load and compile, once
    validate("sagemaker", "DescribeTrainingJob", describe)
    runs = 500
    started = time.perf_counter()
    for _ in range(runs):
        validate("sagemaker", "CreateTrainingJob", create)
    per_create = (time.perf_counter() - started) / runs
    started = time.perf_counter()
    for _ in range(runs):
        validate("sagemaker", "DescribeTrainingJob", describe)
    per_describe = (time.perf_counter() - started) / runs
    assert per_create < 0.5e-3, per_create
    assert per_describe < 0.05e-3, per_describe


def test_importing_loads_no_model() -> None:
    # botocore's models load on first use, not at import (style rule 8): checked in a fresh process.
    probe = ("import shipyard.api.validation, shipyard.control.shapes as v; "
             "print(v._load_service_model.cache_info().currsize, v._category_runs.cache_info().currsize)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.split() == ["0", "0"]


# ------------------------------------------------------------------ fuzzing

JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.text(max_size=20)
                | st.floats(allow_nan=True, allow_infinity=True)
                | st.integers(min_value=-(2**70), max_value=2**70))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=15)
FUZZ = settings(max_examples=25, deadline=500, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _shape_values(shape: Shape, depth: int = 0, junk: bool = True) -> st.SearchStrategy[Any]:
    """Values near ``shape``: often valid, sometimes at or past a bound, sometimes junk."""
    kind, meta = shape.type_name, shape.metadata
    if depth > 6:
        return JSON_SCALARS
    if kind == "structure":
        members = {name: _shape_values(member, depth + 1, junk)
                   for name, member in shape.members.items()}
        required = {name: members[name] for name in shape.required_members}
        optional = {name: value for name, value in members.items() if name not in required}
        strategy: st.SearchStrategy[Any] = st.fixed_dictionaries(required, optional=optional)
    elif kind == "list":
        strategy = st.lists(_shape_values(shape.member, depth + 1, junk), max_size=3)
    elif kind == "map":
        strategy = st.dictionaries(_shape_values(shape.key, depth + 1, junk=False),
                                   _shape_values(shape.value, depth + 1, junk), max_size=3)
    elif kind == "string" and shape.enum:
        strategy = st.sampled_from(shape.enum)
    elif kind == "string":
        size = meta.get("max", 30)
        strategy = st.text(min_size=max(0, meta.get("min", 0) - 1),
                           max_size=min(size + 1, 80)) | st.just("a" * (size + 1))
        if "pattern" in meta and not re.search(r"\\[pu]|\.|\[\^|\\S", meta["pattern"]):
            # Values the pattern accepts, of any length (not where the class is most of Unicode:
            # hypothesis takes seconds to build those).
            strategy = _matching(meta["pattern"]) | strategy
    elif kind in ("integer", "long"):
        low, high = meta.get("min", -(2**40)), meta.get("max", 2**40)
        strategy = st.integers(min_value=math.floor(low) - 1, max_value=math.ceil(high) + 1)
    elif kind in ("float", "double"):
        strategy = st.floats(allow_nan=False, allow_infinity=False)
    elif kind == "boolean":
        strategy = st.booleans()
    elif kind == "timestamp":
        strategy = st.integers(0, 2**33) | st.just("2024-01-01T00:00:00Z")
    else:
        strategy = JSON_VALUES
    return st.one_of(strategy, strategy, strategy, JSON_VALUES) if junk else strategy


@functools.cache
def _matching(pattern: str) -> st.SearchStrategy[str]:
    compiled = compile_java_pattern(pattern)
    return st.from_regex(compiled, fullmatch=True) if compiled is not None else st.nothing()


@st.composite
def _near_valid(draw: st.DrawFn, shape: Shape) -> Any:
    """A value drawn near ``shape``, then (half the time) one node swapped for any JSON."""
    value = draw(_shape_values(shape, junk=False))
    return _mutate(draw, value) if draw(st.booleans()) else value


def _mutate(draw: st.DrawFn, value: Any) -> Any:
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        return {**value, key: _mutate(draw, value[key])}
    if isinstance(value, list) and value and draw(st.booleans()):
        index = draw(st.integers(0, len(value) - 1))
        return [*value[:index], _mutate(draw, value[index]), *value[index + 1:]]
    return draw(JSON_VALUES)


def _assert_answer_is_aws_like(service: str, operation: str, params: Any) -> None:
    started = time.perf_counter()
    try:
        validate(service, operation, params)
    except (ValidationError, InvalidParameter) as exc:
        assert isinstance(exc, InvalidParameter if service == "logs" else ValidationError)
        assert re.match(r"\d+ validation errors? detected: Value", exc.message), exc.message
        json.dumps({"__type": exc.code, "message": exc.message})  # the envelope can carry it
    except SerializationError as exc:
        assert isinstance(exc.message, str)
    assert time.perf_counter() - started < 0.25


@pytest.mark.parametrize(("service", "operation"), CASES)
def test_fuzz_arbitrary_json(service: str, operation: str) -> None:
    names = list(operation_model(service, operation).input_shape.members)
    params = st.dictionaries(st.sampled_from(names) | st.text(max_size=6), JSON_VALUES,
                             max_size=6) | JSON_VALUES

    @FUZZ
    @given(params)
    def run(value: Any) -> None:
        _assert_answer_is_aws_like(service, operation, value)

    run()


@pytest.mark.parametrize(("service", "operation"), CASES)
def test_fuzz_near_valid_params(service: str, operation: str) -> None:
    shape = operation_model(service, operation).input_shape

    @FUZZ
    @given(_near_valid(shape))
    def run(value: Any) -> None:
        _assert_answer_is_aws_like(service, operation, value)

    run()


@FUZZ
@given(st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_fuzz_parse_json_body(body: bytes) -> None:
    try:
        parsed = parse_json_body(body)
    except SerializationError:
        return
    assert isinstance(parsed, dict)
    assert None not in parsed.values()
