"""Batch transform jobs at the plane's door. Their runner is
:class:`shipyard.control.transform.job.TransformJob`: the hosts are serving containers that the
platform feeds records, not containers that run to completion, so the supervisor of
training and processing jobs does not drive them.
"""

from __future__ import annotations

from typing import Any

from shipyard import kinds
from shipyard.control.context import Context
from shipyard.control.endpoints.serving import primary_container
from shipyard.control.jobs.kind import Describe, Preflight, Runner
from shipyard.control.transform import request as transform_request


class TransformJobs:
    kind = kinds.TRANSFORM

    def validate(self, request: dict[str, Any]) -> dict[str, Any]:
        return transform_request.validate(request)

    def locations(self, req: dict[str, Any]) -> list[tuple[str, str]]:
        return transform_request.host_locations(req)

    def preflight(self, req: dict[str, Any], ctx: Context, describe: Describe) -> Preflight:
        # 'Could not find model "<arn>".', as AWS answers for a model that does not exist.
        model = describe(kinds.MODEL.key, req["ModelName"])
        # Each instance is a serve container of its own: no multi-host network is needed.
        return Preflight(primary_container(model)["Image"],
                         [transform_request.input_source(req)[0]], 1,
                         req["TransformResources"].get("InstanceType") or "local")

    def new_record(self, req: dict[str, Any], arn: str, at: float) -> dict[str, Any]:
        return transform_request.new_record(req, arn, at)

    def runner(self, ctx: Context, name: str) -> Runner:
        from shipyard.control.transform.job import TransformJob

        return TransformJob(ctx, name)

    def transition(self, record: dict[str, Any], status: str, message: str, at: float) -> None:
        """Transform jobs have no secondary statuses."""
