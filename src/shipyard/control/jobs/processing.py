"""Processing jobs: validation, the DescribeProcessingJob record and container layout.

Implements CreateProcessingJob semantics (platform-api.md 3.6, toolkits.md 3.5): inputs at
their ``LocalPath`` under ``/opt/ml/processing/``, outputs uploaded per output at the end,
``/opt/ml/config/processingjobconfig.json`` and ``resourceconfig.json``, the container run as
``[ContainerEntrypoint] image [ContainerArguments]`` (no ``train`` argument), and
``/opt/ml/output/message``'s first 1 KB as ``ExitMessage``. :class:`ProcessingJobs` is the
kind the plane and the supervisor drive.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shipyard import contract, kinds
from shipyard.contract.paths import PROCESSING_PREFIX, OptMl
from shipyard.control import artifacts, staging
from shipyard.control.context import Context
from shipyard.control.jobs.kind import (
    Describe,
    JobServices,
    Outcome,
    Preflight,
    Supervised,
    stage_inputs,
)
from shipyard.control.jobs.spec import (
    HostPlan,
    check_environment,
    check_image_name,
    check_instance,
    check_output_uri,
    make_host_root,
    require,
)
from shipyard.control.shapes import check_request
from shipyard.control.state import records
from shipyard.errors import ValidationError
from shipyard.runtimes.base import Mount

CONTAINER_ROOT = OptMl()


def validate(request: dict[str, Any]) -> dict[str, Any]:
    """Check a CreateProcessingJob request; returns a normalised deep copy.

    botocore's model first (:func:`check_request`), then what it cannot say: S3 inputs and
    outputs with a ``LocalPath`` under /opt/ml/processing (dataset definitions and Feature
    Store outputs are not run), File mode only, locations Shipyard can read, unique names
    and paths that do not overlap.
    """
    req = check_request("CreateProcessingJob", request)
    # Required by the model, yet it may be empty there.
    check_image_name(require(req["AppSpecification"], "ImageUri", "appSpecification.imageUri"))
    check_instance(req["ProcessingResources"]["ClusterConfig"],
                   "processingResources.clusterConfig")
    req.setdefault("StoppingCondition", {"MaxRuntimeInSeconds": 86400})
    check_environment(req.get("Environment"))
    local_paths: set[str] = set()
    input_names: set[str] = set()
    for item in req.get("ProcessingInputs") or []:
        name = item["InputName"]
        if name in input_names:
            raise ValidationError(f"ProcessingInputs: InputName {name} appears twice")
        input_names.add(name)
        s3 = require(item, "S3Input", f"ProcessingInputs {name}: S3Input")
        check_output_uri(s3["S3Uri"], f"ProcessingInputs {name}: S3Uri")
        s3.setdefault("S3InputMode", "File")
        s3.setdefault("S3DataDistributionType", "FullyReplicated")
        s3.setdefault("S3CompressionType", "None")
        if s3["S3InputMode"] != "File":
            raise ValidationError(f"ProcessingInputs {name}: only S3InputMode File is supported")
        _check_local_path(require(s3, "LocalPath", "s3Input.localPath"), local_paths,
                          f"ProcessingInputs {name}")
    output_names: set[str] = set()
    for item in (req.get("ProcessingOutputConfig") or {}).get("Outputs") or []:
        name = item["OutputName"]
        if name in output_names:
            raise ValidationError(f"ProcessingOutputConfig: OutputName {name} appears twice")
        output_names.add(name)
        s3 = require(item, "S3Output", f"Output {name}: S3Output")
        check_output_uri(s3["S3Uri"], f"Output {name}: S3Uri")
        _check_local_path(require(s3, "LocalPath", "s3Output.localPath"), local_paths,
                          f"Output {name}")
    return req


def _check_local_path(path: str, seen: set[str], what: str) -> None:
    normal = os.path.normpath(path)
    if not path.startswith(PROCESSING_PREFIX) or ".." in Path(path).parts:
        raise ValidationError(f"{what}: LocalPath {path!r} must begin with {PROCESSING_PREFIX}")
    for other in seen:
        if normal == other or normal.startswith(other + "/") or other.startswith(normal + "/"):
            raise ValidationError(f"{what}: LocalPath {path} overlaps {other}")
    seen.add(normal)


def new_record(req: dict[str, Any], arn: str, at: float) -> dict[str, Any]:
    record: dict[str, Any] = {
        "ProcessingJobName": req["ProcessingJobName"],
        "ProcessingJobArn": arn,
        "ProcessingJobStatus": records.IN_PROGRESS,
        "ProcessingInputs": req.get("ProcessingInputs") or [],
        "ProcessingResources": req["ProcessingResources"],
        "StoppingCondition": req["StoppingCondition"],
        "AppSpecification": req["AppSpecification"],
        "Environment": dict(req.get("Environment") or {}),
        "RoleArn": req["RoleArn"],
        "CreationTime": at,
        "LastModifiedTime": at,
    }
    for optional in ("ProcessingOutputConfig", "NetworkConfig", "ExperimentConfig"):
        if optional in req:
            record[optional] = req[optional]
    return record


def host_count(record: dict[str, Any]) -> int:
    return int(record["ProcessingResources"]["ClusterConfig"].get("InstanceCount") or 1)


def outputs(record: dict[str, Any]) -> list[dict[str, Any]]:
    return list((record.get("ProcessingOutputConfig") or {}).get("Outputs") or [])


def host_locations(req: dict[str, Any]) -> list[tuple[str, str]]:
    """``(member, uri)`` of every location of a validated request that names a host path."""
    found = [(f"ProcessingInputs {item['InputName']}", item["S3Input"]["S3Uri"])
             for item in req.get("ProcessingInputs") or []]
    found += [(f"Output {item['OutputName']}", item["S3Output"]["S3Uri"])
              for item in outputs(req)]
    return [(member, uri) for member, uri in found if not uri.startswith("s3://")]


def output_dir(root: Path, output_name: str) -> Path:
    return root / "processing-outputs" / output_name


def network_isolated(record: dict[str, Any]) -> bool:
    return bool((record.get("NetworkConfig") or {}).get("EnableNetworkIsolation"))


def plan_hosts(
    record: dict[str, Any], job_dir: Path,
    input_paths: dict[str, dict[str, staging.StagedPath]],
    writable: frozenset[str] = frozenset(),
) -> list[HostPlan]:
    """Lay out each host; the inputs in ``writable`` are the host's own copies
    (``staging.private_copies``)."""
    hosts = contract.host_names(host_count(record))
    config_doc = {k: v for k, v in record.items()
                  if k not in ("ProcessingJobStatus", "CreationTime", "LastModifiedTime")}
    app = record["AppSpecification"]
    plans = []
    for host in hosts:
        root = make_host_root(job_dir / "hosts" / host)
        layout = OptMl.at(root)
        contract.write_json(Path(layout.processing_job_config_file), config_doc)
        contract.write_json(Path(layout.processing_resource_config_file),
                            contract.processing_resource_config(host, hosts))
        mounts = [
            Mount(str(layout.processing_config_dir), str(CONTAINER_ROOT.processing_config_dir),
                  True),
            Mount(str(layout.output_dir), str(CONTAINER_ROOT.output_dir)),
        ]
        for item in record["ProcessingInputs"]:
            s3 = item["S3Input"]
            staged = input_paths[item["InputName"]][host]
            mounts.append(Mount(str(staged.host_path), s3["LocalPath"].rstrip("/"),
                                item["InputName"] not in writable, fetch=staged.fetch))
        for item in outputs(record):
            folder = output_dir(root, item["OutputName"])
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o777)
            mounts.append(Mount(str(folder), item["S3Output"]["LocalPath"].rstrip("/")))
        plans.append(HostPlan(
            host=host,
            root=root,
            mounts=mounts,
            entrypoint=app.get("ContainerEntrypoint"),
            command=app.get("ContainerArguments"),
            env={
                **record.get("Environment", {}),
                "PROCESSING_JOB_NAME": record["ProcessingJobName"],
                "PROCESSING_JOB_ARN": record["ProcessingJobArn"],
            },
        ))
    return plans


class ProcessingJobs(Supervised):
    kind = kinds.PROCESSING

    # -- the door ---------------------------------------------------------------------------
    validate = staticmethod(validate)
    locations = staticmethod(host_locations)
    new_record = staticmethod(new_record)

    def preflight(self, req: dict[str, Any], ctx: Context, describe: Describe) -> Preflight:
        return Preflight(self.image(req),
                         [i["S3Input"]["S3Uri"] for i in req.get("ProcessingInputs") or []],
                         self.host_count(req), self.resources(req)["InstanceType"])

    # -- the supervisor ---------------------------------------------------------------------
    def image(self, record: dict[str, Any]) -> str:
        return str(record["AppSpecification"]["ImageUri"])

    def resources(self, record: dict[str, Any]) -> dict[str, Any]:
        return dict(record["ProcessingResources"]["ClusterConfig"])

    def host_count(self, record: dict[str, Any]) -> int:
        return host_count(record)

    def network_isolated(self, record: dict[str, Any]) -> bool:
        return network_isolated(record)

    def metric_definitions(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    def plan(self, job: JobServices, record: dict[str, Any], job_dir: Path) -> list[HostPlan]:
        hosts = contract.host_names(host_count(record))
        inputs, writable = stage_inputs(
            job, [(i["InputName"], i["S3Input"]["S3Uri"], i["S3Input"]["S3DataType"],
                   i["S3Input"]["S3DataDistributionType"]) for i in record["ProcessingInputs"]],
            hosts, job_dir)
        return plan_hosts(record, job_dir, inputs, writable)

    def started(self, record: dict[str, Any], at: float, notice: str = "") -> None:
        """DescribeProcessingJob has no status message: the notice is in the server's log."""
        record["ProcessingStartTime"] = at
        record["LastModifiedTime"] = at

    def transition(self, record: dict[str, Any], status: str, message: str, at: float) -> None:
        """Processing jobs have no secondary statuses."""

    def deliver(self, job: JobServices, record: dict[str, Any], roots: dict[str, Path],
                status: str, job_dir: Path) -> None:
        for item in outputs(record):
            uri = item["S3Output"]["S3Uri"]
            for root in roots.values():
                artifacts.upload_dir(output_dir(root, item["OutputName"]),
                                     job.destination(uri), job.s3_for(uri))

    def complete(self, record: dict[str, Any], outcome: Outcome) -> None:
        exit_message = _exit_message(outcome.roots)
        if exit_message is not None:
            record["ExitMessage"] = exit_message
        if "ProcessingStartTime" in record:
            record["ProcessingEndTime"] = outcome.end

    def failed_early(self, record: dict[str, Any], reason: str, at: float) -> None:
        """Nothing beyond the status and FailureReason the supervisor writes."""


def _exit_message(roots: dict[str, Path]) -> str | None:
    texts = []
    for host in sorted(roots):
        path = Path(OptMl.at(roots[host]).message_file)
        if path.is_file():
            # The container writes it: never more than the message can hold is read.
            with open(path, "rb") as fh:
                data = fh.read(contract.EXIT_MESSAGE_MAX * 4)
            texts.append(data.decode("utf-8", errors="replace"))
    if not texts:
        return None
    return "".join(texts)[: contract.EXIT_MESSAGE_MAX]
