"""SageMaker request bodies for the jobs the tests create: one shape, each test's values.

The defaults are those of a job on the in-memory runtime (``FAKE_IMAGE``, an ``ml.m5.large``,
an hour's limit); tests on real engines pass their image and limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.files import write_tree

ACCOUNT = "000000000000"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/shipyard"
#: The image a FakeRuntime is told it has.
FAKE_IMAGE = "example/train:1"
ONE_ROW = {"part-0.csv": "1,2\n"}


def channel(uri: str, name: str = "training", data_type: str = "S3Prefix",
            **source: str) -> dict[str, Any]:
    """An ``InputDataConfig`` entry; ``source`` adds fields to its ``S3DataSource``."""
    return {"ChannelName": name, "DataSource": {"S3DataSource": {
        "S3DataType": data_type, "S3Uri": uri, **source}}}


def training_request(name: str, tmp: Path, *, image: str = FAKE_IMAGE,
                     files: Mapping[str, str] = ONE_ROW, data: Path | None = None,
                     instance_type: str = "ml.m5.large", instance_count: int = 1,
                     volume_gb: int = 1, max_runtime_s: int = 3600, role: str = ROLE,
                     **extra: Any) -> dict[str, Any]:
    """CreateTrainingJob reading ``data`` (default: ``files`` written to ``tmp/data``) as
    its ``training`` channel and writing under ``tmp/out``; ``extra`` fields are added or
    replace ours."""
    if data is None:
        data = write_tree(tmp / "data", files)
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": role,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "InputDataConfig": [channel(data.as_uri())],
        "OutputDataConfig": {"S3OutputPath": (tmp / "out").as_uri()},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": instance_count,
                           "VolumeSizeInGB": volume_gb},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime_s},
    }
    request.update(extra)
    return request
