"""Helpers shared by the job kinds: ARNs, timestamps, secondary-status transitions."""

from __future__ import annotations

import time
from typing import Any

#: kind -> (ARN resource type, status field, name field, ARN field)
KINDS: dict[str, tuple[str, str, str, str]] = {
    "training": ("training-job", "TrainingJobStatus", "TrainingJobName", "TrainingJobArn"),
    "processing": ("processing-job", "ProcessingJobStatus", "ProcessingJobName",
                   "ProcessingJobArn"),
    "transform": ("transform-job", "TransformJobStatus", "TransformJobName", "TransformJobArn"),
    # Models and endpoint configs have no status of their own; their rows say "Created".
    "model": ("model", "", "ModelName", "ModelArn"),
    "endpoint-config": ("endpoint-config", "", "EndpointConfigName", "EndpointConfigArn"),
    "endpoint": ("endpoint", "EndpointStatus", "EndpointName", "EndpointArn"),
}

IN_PROGRESS = "InProgress"
COMPLETED = "Completed"
FAILED = "Failed"
STOPPING = "Stopping"
STOPPED = "Stopped"
ACTIVE_STATUSES = (IN_PROGRESS, STOPPING)
TERMINAL_STATUSES = (COMPLETED, FAILED, STOPPED)


def job_arn(kind: str, name: str, region: str, account: str) -> str:
    """``arn:aws:sagemaker:<region>:<account>:training-job/<name>``; AWS lowercases names."""
    return f"arn:aws:sagemaker:{region}:{account}:{KINDS[kind][0]}/{name.lower()}"


def now() -> float:
    # Millisecond precision, as SageMaker's timestamps have.
    return round(time.time(), 3)


def status_of(kind: str, record: dict[str, Any]) -> str:
    return str(record[KINDS[kind][1]])


def set_status(kind: str, record: dict[str, Any], status: str, at: float) -> str:
    record[KINDS[kind][1]] = status
    record["LastModifiedTime"] = at
    return status


def transition(record: dict[str, Any], status: str, message: str, at: float) -> None:
    """Close the current secondary status and open ``status`` (training jobs only).

    The SDK prints ``{Status} - {StatusMessage}`` for each new transition, so every
    transition carries a message.
    """
    transitions = record.setdefault("SecondaryStatusTransitions", [])
    if transitions and transitions[-1]["Status"] == status:
        transitions[-1]["StatusMessage"] = message
    else:
        if transitions and "EndTime" not in transitions[-1]:
            transitions[-1]["EndTime"] = at
        transitions.append({"Status": status, "StartTime": at, "StatusMessage": message})
    record["SecondaryStatus"] = status
    record["LastModifiedTime"] = at
