"""What the console's tests share: many ended jobs' records, built by the control plane's own
code and written through its store, and where screenshots are kept as artifacts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from shipyard.control.state.store import Store
from tests.support.jobs import ACCOUNT, ROLE

REGION = "us-east-1"
#: Where the tests save their screenshots (CI keeps the folder as an artifact).
ARTIFACTS = Path(os.environ.get("SHIPYARD_TEST_ARTIFACTS",
                                Path(tempfile.gettempdir()) / "shipyard-console-artifacts"))
STATUSES = ("Completed", "Completed", "Completed", "Failed", "Stopped")


def training_request(i: int, prefix: str) -> dict[str, Any]:
    """A CreateTrainingJob request as the SageMaker SDK's generic Estimator sends one."""
    return {
        "TrainingJobName": f"{prefix}-{i:05d}",
        "HyperParameters": {"max_depth": str(3 + i % 6), "eta": "0.2", "num_round": str(50)},
        "AlgorithmSpecification": {
            "TrainingImage": "example/train:1", "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "validation:auc", "Regex": r"auc:(\S+)"}]},
        "RoleArn": ROLE,
        "InputDataConfig": [
            {"ChannelName": channel, "ContentType": "text/csv", "InputMode": "File",
             "CompressionType": "None",
             "DataSource": {"S3DataSource": {
                 "S3DataType": "S3Prefix", "S3DataDistributionType": "FullyReplicated",
                 "S3Uri": f"s3://bench-bucket/xgb/{channel}/"}}}
            for channel in ("train", "validation")],
        "OutputDataConfig": {"S3OutputPath": "s3://bench-bucket/xgb/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                           "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
    }


def finished_record(i: int, prefix: str, created: float) -> tuple[dict[str, Any], str]:
    """A training job's record after it ended, built by the control plane's own code, step
    by step, and its status (completed mostly, some failed or stopped)."""
    from shipyard.control.jobs import training
    from shipyard.control.state import records

    req = training.validate(training_request(i, prefix))
    arn = records.job_arn("training", req["TrainingJobName"], REGION, ACCOUNT)
    record = training.new_record(req, arn, created)
    records.transition(record, "Downloading", "Downloading input data", created + 0.4)
    started = created + 2.0
    record["TrainingStartTime"] = started
    records.transition(record, "Training", "Training in progress.", started)
    end = started + 60 + i % 240
    status = STATUSES[i % len(STATUSES)]
    if status == "Failed":
        record["FailureReason"] = f"AlgorithmError: exit code 1 (job {i})"
    record["TrainingEndTime"] = end
    records.transition(record, status, f"Training job {status.lower()}", end)
    records.set_status("training", record, status, end)
    return record, status


def seed_training_jobs(state_db: Path, count: int, prefix: str = "seeded",
                       start: float = 1_700_000_000.0) -> None:
    """Write ``count`` ended training jobs into the state database (through the store)."""
    store = Store(state_db)
    try:
        for i in range(count):
            record, status = finished_record(i, prefix, start + i * 60.0)
            store.insert_job("training", record["TrainingJobName"], record["TrainingJobArn"],
                             status, record, {"phase": "done"})
    finally:
        store.close()
