"""Fuzzing the running server over HTTP: whatever arrives, the answer is a well-formed AWS
response, the server stays up, and the state stays consistent.

Requests are signed for real (botocore's SigV4Auth) so they get past authentication and reach
parsing, validation and the handlers. The control plane runs on the in-memory FakeRuntime, so
the creates that happen to be valid run as (fake) jobs instead of starting containers.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.api import sagemaker as sagemaker_api
from shipyard.api.logs import HANDLERS as LOGS_HANDLERS
from shipyard.control import ControlPlane
from shipyard.runtimes import FakeBehaviour, FakeRuntime
from shipyard.settings import Settings
from tests.support.api import post_json, serving

IMAGE = "fuzz/image:1"
TARGETS = ([f"SageMaker.{op}" for op in sagemaker_api.HANDLERS]
           + [f"Logs_20140328.{op}" for op in LOGS_HANDLERS]
           + ["SageMaker.DeleteEverything", "Nope.Thing", ""])


class Target:
    def __init__(self, url: str, akid: str, secret: str) -> None:
        self.url, self.akid, self.secret = url, akid, secret

    def post(self, target: str, body: bytes) -> tuple[int, bytes, str]:
        return post_json(self.url, target, body, (self.akid, self.secret))


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data = tmp_path_factory.mktemp("fuzz")
    (data / "in").mkdir()
    (data / "in" / "x.csv").write_text("1\n")
    runtime = FakeRuntime(lambda spec: FakeBehaviour(logs=("line",)), images=[IMAGE])
    settings = Settings.load({"data_dir": str(data / "state"), "api_port": 0,
                              "stop_grace_seconds": 0.1}, environ={})
    with serving(settings, ControlPlane(settings, runtime)) as api:
        yield Target(api.url, api.akid, api.secret)


def assert_well_formed(status: int, body: bytes, content_type: str) -> None:
    assert status < 500, body
    assert content_type == "application/x-amz-json-1.1"
    document = json.loads(body)
    assert isinstance(document, dict)
    if status != 200:
        assert status in (400, 403, 404, 413)
        assert isinstance(document.get("__type"), str) and document["__type"]
        assert isinstance(document.get("message", ""), str)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=20), children, max_size=4),
    max_leaves=20,
)
member_names = st.sampled_from([
    "TrainingJobName", "ProcessingJobName", "AlgorithmSpecification", "RoleArn",
    "InputDataConfig", "OutputDataConfig", "ResourceConfig", "StoppingCondition",
    "HyperParameters", "MaxResults", "NextToken", "SortBy", "SortOrder", "StatusEquals",
    "ResourceArn", "Tags", "TagKeys", "logGroupName", "logStreamName", "nextToken", "limit",
    "startFromHead", "AppSpecification", "ProcessingResources", "ProcessingInputs",
]) | st.text(max_size=12)


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(target_name=st.sampled_from(TARGETS),
       params=st.dictionaries(member_names, json_values, max_size=6))
def test_random_members_get_aws_errors(target: Target, target_name: str,
                                       params: dict[str, Any]) -> None:
    assert_well_formed(*target.post(target_name, json.dumps(params).encode()))


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target_name=st.sampled_from(TARGETS), body=st.binary(max_size=200))
def test_random_bytes_get_aws_errors(target: Target, target_name: str, body: bytes) -> None:
    assert_well_formed(*target.post(target_name, body))


def _valid_create(name: str, data: Path) -> dict[str, Any]:
    return {
        "TrainingJobName": name, "RoleArn": "arn:aws:iam::000000000000:role/fuzz",
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": str(data)}}}],
        "OutputDataConfig": {"S3OutputPath": str(data.parent / "out")},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1,
                           "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
    }


@st.composite
def mutated_creates(draw: st.DrawFn) -> dict[str, Any]:
    request = _valid_create(draw(st.from_regex(r"fz-[a-z0-9]{1,12}", fullmatch=True)),
                            Path("/nonexistent/in"))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from([
            ("TrainingJobName",), ("RoleArn",), ("AlgorithmSpecification", "TrainingImage"),
            ("AlgorithmSpecification", "TrainingInputMode"), ("ResourceConfig", "InstanceCount"),
            ("ResourceConfig", "InstanceType"), ("StoppingCondition", "MaxRuntimeInSeconds"),
            ("OutputDataConfig", "S3OutputPath"), ("InputDataConfig",), ("HyperParameters",),
            ("Environment",), ("CheckpointConfig",)]))
        node = request
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = draw(json_values)
    return request


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=mutated_creates())
def test_mutated_creates_never_break_the_server(target: Target,
                                                request: dict[str, Any]) -> None:
    assert_well_formed(*target.post("SageMaker.CreateTrainingJob",
                                    json.dumps(request).encode()))


def test_state_is_consistent_after_fuzzing(target: Target, tmp_path: Path) -> None:
    """After everything above, the server still creates, lists and describes correctly."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.csv").write_text("1\n")
    request = _valid_create("after-fuzz", tmp_path / "in")
    status, body, _ = target.post("SageMaker.CreateTrainingJob", json.dumps(request).encode())
    assert status == 200, body
    status, body, _ = target.post("SageMaker.CreateTrainingJob", json.dumps(request).encode())
    assert status == 400 and json.loads(body)["__type"] == "ResourceInUse"
    seen: list[str] = []
    token = None
    while True:
        params: dict[str, Any] = {"MaxResults": 100}
        if token:
            params["NextToken"] = token
        status, body, _ = target.post("SageMaker.ListTrainingJobs", json.dumps(params).encode())
        assert status == 200
        page = json.loads(body)
        seen += [s["TrainingJobName"] for s in page["TrainingJobSummaries"]]
        token = page.get("NextToken")
        if not token:
            break
    assert "after-fuzz" in seen and len(seen) == len(set(seen))
    for name in seen:
        status, body, _ = target.post("SageMaker.DescribeTrainingJob",
                                      json.dumps({"TrainingJobName": name}).encode())
        assert status == 200, body
        assert json.loads(body)["TrainingJobName"] == name
    mangled = copy.deepcopy(request)
    mangled["TrainingJobName"] = "after-fuzz-2"
    mangled["HyperParameters"] = {"k": "v" * 2501}
    status, body, _ = target.post("SageMaker.CreateTrainingJob", json.dumps(mangled).encode())
    assert status == 400 and "after-fuzz-2" not in json.dumps(seen)
