"""Helpers shared by the job kinds: ARNs, timestamps, secondary-status transitions."""

from __future__ import annotations

import time
from typing import Any

from shipyard import kinds

IN_PROGRESS = "InProgress"
COMPLETED = "Completed"
FAILED = "Failed"
STOPPING = "Stopping"
STOPPED = "Stopped"
ACTIVE_STATUSES = (IN_PROGRESS, STOPPING)
TERMINAL_STATUSES = (COMPLETED, FAILED, STOPPED)


def job_arn(kind: str, name: str, region: str, account: str) -> str:
    """``arn:aws:sagemaker:<region>:<account>:training-job/<name>``; AWS lowercases names."""
    return kinds.get(kind).arn(name, region, account)


def now() -> float:
    # Millisecond precision, as SageMaker's timestamps have.
    return round(time.time(), 3)


def status_of(kind: str, record: dict[str, Any]) -> str:
    return str(record[kinds.get(kind).status_field])


def set_status(kind: str, record: dict[str, Any], status: str, at: float) -> str:
    record[kinds.get(kind).status_field] = status
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
