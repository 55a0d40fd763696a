"""CreateHyperParameterTuningJob: the request checked, its definitions, its record.

A tuning job has one training job definition (``TrainingJobDefinition``) or up to ten
(``TrainingJobDefinitions``, each with a ``DefinitionName``, its own objective and ranges).
Every definition is checked by building the first trial's CreateTrainingJob request from it
and checking that the way CreateTrainingJob is checked: a definition that would make a
training job Shipyard refuses is refused when the tuning job is created, not trial by trial.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from shipyard.control.jobs import training
from shipyard.control.shapes import check_request
from shipyard.control.state import records
from shipyard.control.tuning import ranges as tuning_ranges
from shipyard.control.tuning.ranges import Range
from shipyard.errors import ValidationError

__all__ = ["OBJECTIVE_HYPERPARAMETER", "Definition", "definitions", "new_record", "request_of",
           "trial_request", "validate"]

#: What SageMaker adds to every trial's hyperparameters (and the definition's static ones, as
#: described): the objective's metric name. The SDK's ``attach`` deletes it and fails
#: without it.
OBJECTIVE_HYPERPARAMETER = "_tuning_objective_metric"
MAX_DEFINITIONS = 10
MAX_HYPERPARAMETERS = 100
#: Static hyperparameters Hyperband reads MaxResource from when it is not given (AWS's list).
EPOCH_HYPERPARAMETERS = ("epochs", "numepochs", "n-epochs", "n_epochs", "num_epochs")
MAX_EPOCHS = 20000


@dataclass(frozen=True)
class Definition:
    """One training job definition, as the tuner uses it."""

    #: ``DefinitionName`` (None for the single ``TrainingJobDefinition``).
    name: str | None
    #: The definition as given (the basis of each trial's CreateTrainingJob request).
    body: dict[str, Any]
    metric: str
    minimize: bool
    ranges: list[Range]


def validate(request: dict[str, Any]) -> dict[str, Any]:
    """Check a CreateHyperParameterTuningJob request; returns a normalised deep copy."""
    req = check_request("CreateHyperParameterTuningJob", request)
    config = req["HyperParameterTuningJobConfig"]
    single, several = req.get("TrainingJobDefinition"), req.get("TrainingJobDefinitions")
    if (single is None) == (several is None):
        raise ValidationError("Exactly one of TrainingJobDefinition and TrainingJobDefinitions "
                              "must be specified.")
    strategy = config["Strategy"]
    if strategy == "Hyperband":
        if config.get("TrainingJobEarlyStoppingType", "Off") != "Off":
            raise ValidationError("TrainingJobEarlyStoppingType must be Off when the "
                                  "Hyperband strategy is used: Hyperband stops trials itself.")
    elif config.get("StrategyConfig"):
        raise ValidationError("StrategyConfig is only valid with the Hyperband strategy.")
    if strategy == "Hyperband":
        band = (config.get("StrategyConfig") or {}).get("HyperbandStrategyConfig") or {}
        low, high = band.get("MinResource"), band.get("MaxResource")
        if low is not None and high is not None and low > high:
            raise ValidationError("HyperbandStrategyConfig: MinResource must not be greater "
                                  "than MaxResource.")
    limits = config["ResourceLimits"]
    if strategy != "Grid" and limits.get("MaxNumberOfTrainingJobs") is None:
        raise ValidationError("ResourceLimits.MaxNumberOfTrainingJobs must be specified unless "
                              "the strategy is Grid.")
    found = definitions(req)
    for definition in found:
        _check_definition(req, definition)
        if strategy == "Hyperband":
            max_resource(config, definition)
    if strategy != "Grid":
        tuning_ranges.check_enough_combinations([d.ranges for d in found],
                                                int(limits["MaxNumberOfTrainingJobs"]))
    if strategy == "Grid":
        size = sum(tuning_ranges.grid_size(d.ranges) for d in found)
        given = limits.get("MaxNumberOfTrainingJobs")
        if given is not None and given > size:
            raise ValidationError(
                f"MaxNumberOfTrainingJobs ({given}) is greater than the number of distinct "
                f"categorical combinations of the grid ({size}).")
    return req


def definitions(req: dict[str, Any]) -> list[Definition]:
    """The request's training job definitions, each with its objective and parsed ranges."""
    config = req["HyperParameterTuningJobConfig"]
    strategy = config["Strategy"]
    if req.get("TrainingJobDefinition") is not None:
        objective = config.get("HyperParameterTuningJobObjective")
        if objective is None:
            raise ValidationError("HyperParameterTuningJobConfig.HyperParameterTuningJobObjective"
                                  " must be specified with TrainingJobDefinition.")
        body = req["TrainingJobDefinition"]
        return [_definition(None, body, objective, config.get("ParameterRanges") or {},
                            strategy)]
    bodies = req["TrainingJobDefinitions"]
    if not 1 <= len(bodies) <= MAX_DEFINITIONS:
        raise ValidationError(f"TrainingJobDefinitions must hold 1 to {MAX_DEFINITIONS} "
                              "definitions.")
    found, seen = [], set()
    for body in bodies:
        name = body.get("DefinitionName")
        if not name:
            raise ValidationError("Each of TrainingJobDefinitions needs a DefinitionName.")
        if name in seen:
            raise ValidationError(f"DefinitionName {name} is used by two definitions.")
        seen.add(name)
        objective = body.get("TuningObjective") or config.get("HyperParameterTuningJobObjective")
        if objective is None:
            raise ValidationError(f"Definition {name}: TuningObjective must be specified.")
        found.append(_definition(name, body, objective,
                                 body.get("HyperParameterRanges") or {}, strategy))
    return found


def _definition(name: str | None, body: dict[str, Any], objective: dict[str, Any],
                raw_ranges: dict[str, Any], strategy: str) -> Definition:
    # The objective's hyperparameter is the platform's: no range may take its name.
    static = {*(body.get("StaticHyperParameters") or {}), OBJECTIVE_HYPERPARAMETER}
    parsed = tuning_ranges.parse_ranges(raw_ranges, strategy=strategy, static_names=static)
    if not parsed:
        raise ValidationError("At least one hyperparameter range must be specified.")
    if len(static) + len(parsed) > MAX_HYPERPARAMETERS:
        raise ValidationError(
            f"A training job takes at most {MAX_HYPERPARAMETERS} hyperparameters: the static "
            f"ones, the tuned ones and {OBJECTIVE_HYPERPARAMETER} make "
            f"{len(static) + len(parsed)}.")
    return Definition(name, body, str(objective["MetricName"]),
                      objective["Type"] == "Minimize", parsed)


def _check_definition(req: dict[str, Any], definition: Definition) -> None:
    where = f"Definition {definition.name}: " if definition.name else ""
    metrics = definition.body["AlgorithmSpecification"].get("MetricDefinitions") or []
    if definition.metric not in {m.get("Name") for m in metrics}:
        raise ValidationError(
            f"{where}the objective metric {definition.metric!r} is not one of the "
            "AlgorithmSpecification.MetricDefinitions: define it with the regex that finds "
            "its value in the training log.")
    sample = {r.name: tuning_ranges.encode(r, tuning_ranges.sample_value(r))
              for r in definition.ranges}
    try:
        training.validate(trial_request(req["HyperParameterTuningJobName"], definition,
                                        "000-sample0", sample))
    except ValidationError as exc:
        raise ValidationError(f"{where}{exc.message}") from None


def trial_request(tuning_name: str, definition: Definition, suffix: str,
                  params: dict[str, str]) -> dict[str, Any]:
    """The CreateTrainingJob request of one trial: the definition's members, its static
    hyperparameters, ``params`` and the objective's name (``OBJECTIVE_HYPERPARAMETER``)."""
    body = copy.deepcopy(definition.body)
    hyperparameters = {**(body.get("StaticHyperParameters") or {}), **params,
                       OBJECTIVE_HYPERPARAMETER: definition.metric}
    algorithm = {k: v for k, v in body["AlgorithmSpecification"].items()}
    request: dict[str, Any] = {
        "TrainingJobName": f"{tuning_name}-{suffix}",
        "AlgorithmSpecification": algorithm,
        "RoleArn": body["RoleArn"],
        "OutputDataConfig": body["OutputDataConfig"],
        "StoppingCondition": body["StoppingCondition"],
        "HyperParameters": hyperparameters,
        "ResourceConfig": _resources(body),
    }
    for member in ("InputDataConfig", "VpcConfig", "EnableNetworkIsolation",
                   "EnableInterContainerTrafficEncryption", "EnableManagedSpotTraining",
                   "CheckpointConfig", "Environment", "RetryStrategy"):
        if body.get(member) is not None:
            request[member] = body[member]
    return request


def _resources(body: dict[str, Any]) -> dict[str, Any]:
    """``ResourceConfig``, or what ``HyperParameterTuningResourceConfig`` (what SDK v2.25x
    sends) says of the same."""
    if body.get("ResourceConfig"):
        return dict(body["ResourceConfig"])
    tuning = body.get("HyperParameterTuningResourceConfig") or {}
    if tuning.get("InstanceConfigs"):
        first = tuning["InstanceConfigs"][0]
        tuning = {**tuning, **first}
    resources = {k: tuning[k] for k in ("InstanceType", "InstanceCount", "VolumeSizeInGB")
                 if tuning.get(k) is not None}
    if not resources.get("InstanceType"):
        raise ValidationError("A training job definition needs ResourceConfig or "
                              "HyperParameterTuningResourceConfig with an InstanceType.")
    resources.setdefault("InstanceCount", 1)
    resources.setdefault("VolumeSizeInGB", 30)
    return resources


def new_record(req: dict[str, Any], arn: str, at: float) -> dict[str, Any]:
    config = copy.deepcopy(req["HyperParameterTuningJobConfig"])
    found = definitions(req)
    if config["Strategy"] == "Grid" and config["ResourceLimits"].get(
            "MaxNumberOfTrainingJobs") is None:
        config["ResourceLimits"]["MaxNumberOfTrainingJobs"] = sum(
            tuning_ranges.grid_size(d.ranges) for d in found)
    config.setdefault("TrainingJobEarlyStoppingType", "Off")
    record: dict[str, Any] = {
        "HyperParameterTuningJobName": req["HyperParameterTuningJobName"],
        "HyperParameterTuningJobArn": arn,
        "HyperParameterTuningJobConfig": config,
        "HyperParameterTuningJobStatus": records.IN_PROGRESS,
        "Strategy": config["Strategy"],
        "ResourceLimits": config["ResourceLimits"],
        "CreationTime": at,
        "LastModifiedTime": at,
        "TrainingJobStatusCounters": {"Completed": 0, "InProgress": 0, "RetryableError": 0,
                                      "NonRetryableError": 0, "Stopped": 0},
        "ObjectiveStatusCounters": {"Succeeded": 0, "Pending": 0, "Failed": 0},
        "ConsumedResources": {"RuntimeInSeconds": 0},
    }
    # As described, the definitions carry the objective's hyperparameter (SDK's attach).
    for member in ("TrainingJobDefinition", "TrainingJobDefinitions"):
        if req.get(member) is None:
            continue
        bodies = copy.deepcopy(req[member])
        for body, definition in zip(bodies if isinstance(bodies, list) else [bodies], found,
                                    strict=True):
            body["StaticHyperParameters"] = {**(body.get("StaticHyperParameters") or {}),
                                             OBJECTIVE_HYPERPARAMETER: definition.metric}
            # SDK v2.25x sends HyperParameterTuningResourceConfig alone, and its attach()
            # reads ResourceConfig: described, the definition carries both.
            if not body.get("ResourceConfig"):
                body["ResourceConfig"] = _resources(body)
        record[member] = bodies
    for optional in ("WarmStartConfig", "Autotune"):
        if req.get(optional) is not None:
            record[optional] = req[optional]
    return record


def request_of(record: dict[str, Any]) -> dict[str, Any]:
    """The members of the create request the tuner needs again, from the stored record."""
    return {k: record[k] for k in ("HyperParameterTuningJobName",
                                   "HyperParameterTuningJobConfig", "TrainingJobDefinition",
                                   "TrainingJobDefinitions") if k in record}


def max_resource(config: dict[str, Any], definition: Definition) -> int:
    """Hyperband's ``MaxResource``: as given, else the definition's static epochs
    hyperparameter, as AWS infers it."""
    band = (config.get("StrategyConfig") or {}).get("HyperbandStrategyConfig") or {}
    if band.get("MaxResource") is not None:
        return int(band["MaxResource"])
    static = definition.body.get("StaticHyperParameters") or {}
    for name in EPOCH_HYPERPARAMETERS:
        raw = str(static.get(name, "")).strip('"')
        if raw.isdigit() and 1 <= int(raw) <= MAX_EPOCHS:
            return int(raw)
    raise ValidationError(
        "HyperbandStrategyConfig.MaxResource must be specified, or a static hyperparameter "
        f"({', '.join(EPOCH_HYPERPARAMETERS)}) must give the number of epochs "
        f"(1 to {MAX_EPOCHS}).")
