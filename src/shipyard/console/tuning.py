"""A tuning job's trials as a leaderboard: sortable, the best trial marked, the objective over
the trials in creation order (for the chart)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipyard.console.context import PageContext

__all__ = ["Board", "leaderboard"]

SORTS = ("objective", "name", "status", "created")


@dataclass(frozen=True)
class Board:
    trials: list[dict[str, Any]]
    best: str | None
    metric: str
    minimize: bool
    sort: str
    descending: bool
    #: The objective of each trial that has one, in creation order: (index, value, name).
    curve: list[tuple[int, float, str]]
    #: Every hyperparameter name the trials tuned, in first-seen order.
    parameters: list[str]


def _objective(trial: dict[str, Any]) -> float | None:
    metric = trial.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    value = metric.get("Value")
    return float(value) if isinstance(value, (int, float)) else None


def leaderboard(ctx: PageContext, name: str, record: dict[str, Any]) -> Board:
    trials = ctx.plane.tuning_trials(name)
    config = record.get("HyperParameterTuningJobConfig") or {}
    objective = config.get("HyperParameterTuningJobObjective") or {}
    minimize = objective.get("Type") == "Minimize"
    metric = str(objective.get("MetricName", "objective"))
    by_time = sorted(trials, key=lambda t: (t.get("CreationTime") or 0, t["TrainingJobName"]))
    curve = [(i + 1, value, str(t["TrainingJobName"])) for i, t in enumerate(by_time)
             if (value := _objective(t)) is not None]
    best_record = record.get("BestTrainingJob") or {}
    best = best_record.get("TrainingJobName")
    if best is None and curve:
        chosen = min(curve, key=lambda c: c[1]) if minimize else max(curve, key=lambda c: c[1])
        best = chosen[2]
    sort = ctx.request.query.get("sort", "objective")
    sort = sort if sort in SORTS else "objective"
    asked = ctx.request.query.get("order")
    descending = asked == "desc" if asked in ("asc", "desc") else (
        sort == "objective" and not minimize)

    def key(trial: dict[str, Any]) -> tuple[Any, ...]:
        if sort == "objective":
            value = _objective(trial)
            # Trials without a value sort last whichever way the board is sorted.
            missing = value is None
            number = 0.0 if value is None else value
            return (missing != descending, number)
        if sort == "status":
            return (str(trial.get("TrainingJobStatus")), trial["TrainingJobName"])
        if sort == "created":
            return (trial.get("CreationTime") or 0, trial["TrainingJobName"])
        return (trial["TrainingJobName"],)

    ordered = sorted(trials, key=key, reverse=descending)
    parameters: list[str] = []
    for trial in by_time:
        for parameter in trial.get("TunedHyperParameters") or {}:
            if parameter not in parameters:
                parameters.append(parameter)
    return Board(ordered, best, metric, minimize, sort, descending, curve, parameters)
