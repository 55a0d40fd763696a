"""A tuning job's trials: what the runner keeps of each, and how a trial is summarised
(ListTrainingJobsForHyperParameterTuningJob, BestTrainingJob)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipyard import kinds
from shipyard.control.context import Context
from shipyard.control.tuning import request as tuning_request
from shipyard.control.tuning.request import Definition
from shipyard.errors import ResourceNotFound

__all__ = ["Trial", "summaries", "trial_summary"]


@dataclass
class Trial:
    """One trial as the runner state keeps it."""

    number: int
    definition: int
    search_number: int
    name: str
    params: dict[str, str]
    #: "pending" (chosen, job not yet created), "running", or a final search state
    #: ("complete", "failed", "pruned").
    state: str = "pending"
    value: float | None = None
    steps_seen: int = 0
    attempt: int = 1
    pruned: bool = False
    #: When it reached Hyperband's MaxResource (epoch seconds), if it has.
    full_at: float | None = None

    def to_state(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Trial:
        return cls(**data)


def trial_summary(tuning: str, trial: Trial, record: dict[str, Any],
                  definition: Definition) -> dict[str, Any]:
    """A trial as ListTrainingJobsForHyperParameterTuningJob and BestTrainingJob show it."""
    summary: dict[str, Any] = {
        "TrainingJobName": record["TrainingJobName"],
        "TrainingJobArn": record["TrainingJobArn"],
        "TuningJobName": tuning,
        "CreationTime": record["CreationTime"],
        "TrainingJobStatus": record["TrainingJobStatus"],
        "TunedHyperParameters": dict(trial.params),
        "ObjectiveStatus": ("Succeeded" if trial.value is not None else
                            "Pending" if trial.state == "running" else "Failed"),
    }
    if definition.name is not None:
        summary["TrainingJobDefinitionName"] = definition.name
    for member in ("TrainingStartTime", "TrainingEndTime", "FailureReason"):
        if record.get(member) is not None:
            summary[member] = record[member]
    if trial.value is not None:
        summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": "Minimize" if definition.minimize else "Maximize",
            "MetricName": definition.metric, "Value": trial.value}
    return summary


def summaries(ctx: Context, tuning: str) -> list[dict[str, Any]]:
    """Every trial of the tuning job ``tuning`` that has a training job, summarised."""
    row = ctx.store.get_job(kinds.TUNING.key, tuning)
    definitions = tuning_request.definitions(tuning_request.request_of(row.record))
    found = []
    for data in row.runner.get("trials", []):
        trial = Trial.from_state(data)
        try:
            record = ctx.store.get_job(kinds.TRAINING.key, trial.name).record
        except ResourceNotFound:
            continue
        found.append(trial_summary(tuning, trial, record, definitions[trial.definition]))
    return found
