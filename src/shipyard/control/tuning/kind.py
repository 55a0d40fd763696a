"""Hyperparameter tuning jobs at the plane's door. Their runner is
:class:`shipyard.control.tuning.runner.Tuner`: it runs no container itself; each trial is a
training job, accepted and supervised as CreateTrainingJob's are.
"""

from __future__ import annotations

from typing import Any

from shipyard import kinds
from shipyard.control.context import Context
from shipyard.control.jobs import spec, training
from shipyard.control.jobs.kind import Describe, Preflight, Runner
from shipyard.control.state import records
from shipyard.control.tuning import request as tuning_request
from shipyard.errors import ValidationError


class TuningJobs:
    kind = kinds.TUNING

    def validate(self, request: dict[str, Any]) -> dict[str, Any]:
        return tuning_request.validate(request)

    def locations(self, req: dict[str, Any]) -> list[tuple[str, str]]:
        found = []
        for definition in tuning_request.definitions(req):
            found += training.host_locations(definition.body)
        return found

    def preflight(self, req: dict[str, Any], ctx: Context, describe: Describe) -> Preflight:
        found = tuning_request.definitions(req)
        for parent in (req.get("WarmStartConfig") or {}).get(
                "ParentHyperParameterTuningJobs") or []:
            name = parent["HyperParameterTuningJobName"]
            status = describe(kinds.TUNING.key, name)["HyperParameterTuningJobStatus"]
            if status not in records.TERMINAL_STATUSES:
                raise ValidationError(f"Parent hyperparameter tuning job {name} is {status}: "
                                      "a warm start needs parents that have ended.")
        for definition in found[1:]:
            ctx.runtime.check_image(definition.body["AlgorithmSpecification"]["TrainingImage"])
        first = found[0].body
        resources = tuning_request.trial_request(req["HyperParameterTuningJobName"], found[0],
                                                 "check", {})["ResourceConfig"]
        return Preflight(first["AlgorithmSpecification"]["TrainingImage"],
                         [spec.source_uri_of_channel(c)[0]
                          for d in found for c in d.body.get("InputDataConfig") or []],
                         int(resources.get("InstanceCount", 1)), resources["InstanceType"])

    def new_record(self, req: dict[str, Any], arn: str, at: float) -> dict[str, Any]:
        return tuning_request.new_record(req, arn, at)

    def runner(self, ctx: Context, name: str) -> Runner:
        from shipyard.control.tuning.runner import Tuner

        return Tuner(ctx, name)

    def transition(self, record: dict[str, Any], status: str, message: str, at: float) -> None:
        """Tuning jobs have no secondary statuses."""
