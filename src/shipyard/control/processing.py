"""Processing jobs: validation, the DescribeProcessingJob record and container layout.

Implements CreateProcessingJob semantics (platform-api.md 3.6, toolkits.md 3.5): inputs at
their ``LocalPath`` under ``/opt/ml/processing/``, outputs uploaded per output at the end,
``/opt/ml/config/processingjobconfig.json`` and ``resourceconfig.json``, the container run as
``[ContainerEntrypoint] image [ContainerArguments]`` (no ``train`` argument), and
``/opt/ml/output/message``'s first 1 KB as ``ExitMessage``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from shipyard import contract
from shipyard.contract import names
from shipyard.contract.paths import PROCESSING_PREFIX, OptMl
from shipyard.control import records
from shipyard.control.jobspec import (
    HostPlan,
    check_environment,
    check_image_name,
    check_instance,
    check_max_runtime,
    check_output_uri,
    check_role,
    make_host_root,
    require,
)
from shipyard.errors import ValidationError
from shipyard.runtimes.base import Mount

KIND = "processing"
CONTAINER_ROOT = OptMl()


def validate(request: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(request, dict):
        raise ValidationError("CreateProcessingJob request must be a JSON object")
    req = copy.deepcopy(request)
    names.check_job_name(require(req, "ProcessingJobName", str), "processingJobName")
    check_role(req)
    app = require(req, "AppSpecification", dict)
    check_image_name(require(app, "ImageUri", str, "appSpecification.imageUri"))
    for key in ("ContainerEntrypoint", "ContainerArguments"):
        value = app.get(key)
        if value is not None and (not isinstance(value, list) or not 1 <= len(value) <= 100
                                  or not all(isinstance(v, str) for v in value)):
            raise ValidationError(f"AppSpecification.{key} must be a list of 1-100 strings")
    resources = require(req, "ProcessingResources", dict)
    cluster = require(resources, "ClusterConfig", dict, "processingResources.clusterConfig")
    check_instance(cluster, "processingResources.clusterConfig")
    cluster.setdefault("VolumeSizeInGB", 30)
    check_max_runtime(req.setdefault("StoppingCondition", {"MaxRuntimeInSeconds": 86400}),
                      777600)
    check_environment(req.get("Environment"))
    inputs = req.get("ProcessingInputs") or []
    if not isinstance(inputs, list) or len(inputs) > 10:
        raise ValidationError("ProcessingInputs must be a list of at most 10 inputs")
    local_paths: set[str] = set()
    input_names: set[str] = set()
    for item in inputs:
        if not isinstance(item, dict):
            raise ValidationError("ProcessingInputs entries must be objects")
        name = require(item, "InputName", str, "processingInputs.member.inputName")
        if name in input_names:
            raise ValidationError(f"ProcessingInputs: InputName {name} appears twice")
        input_names.add(name)
        s3 = require(item, "S3Input", dict, f"ProcessingInputs {name}: S3Input")
        uri = require(s3, "S3Uri", str, "s3Input.s3Uri")
        check_output_uri(uri, f"ProcessingInputs {name}: S3Uri")
        s3.setdefault("S3DataType", "S3Prefix")
        s3.setdefault("S3InputMode", "File")
        s3.setdefault("S3DataDistributionType", "FullyReplicated")
        s3.setdefault("S3CompressionType", "None")
        if s3["S3InputMode"] != "File":
            raise ValidationError(f"ProcessingInputs {name}: only S3InputMode File is supported")
        _check_local_path(require(s3, "LocalPath", str, "s3Input.localPath"), local_paths,
                          f"ProcessingInputs {name}")
    config = req.get("ProcessingOutputConfig")
    if config is not None:
        outputs = require(config, "Outputs", list, "processingOutputConfig.outputs")
        if len(outputs) > 10:
            raise ValidationError("ProcessingOutputConfig.Outputs may hold at most 10 outputs")
        output_names: set[str] = set()
        for item in outputs:
            if not isinstance(item, dict):
                raise ValidationError("ProcessingOutputConfig.Outputs entries must be objects")
            name = require(item, "OutputName", str, "outputs.member.outputName")
            if name in output_names:
                raise ValidationError(f"ProcessingOutputConfig: OutputName {name} appears twice")
            output_names.add(name)
            s3 = require(item, "S3Output", dict, f"Output {name}: S3Output")
            check_output_uri(require(s3, "S3Uri", str, "s3Output.s3Uri"),
                             f"Output {name}: S3Uri")
            s3.setdefault("S3UploadMode", "EndOfJob")
            _check_local_path(require(s3, "LocalPath", str, "s3Output.localPath"), local_paths,
                              f"Output {name}")
    return req


def _check_local_path(path: str, seen: set[str], what: str) -> None:
    normal = os.path.normpath(path)
    if not path.startswith(PROCESSING_PREFIX) or ".." in Path(path).parts or len(path) > 256:
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
    record: dict[str, Any], job_dir: Path, input_paths: dict[str, dict[str, Path]]
) -> list[HostPlan]:
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
            mounts.append(Mount(str(input_paths[item["InputName"]][host]),
                                s3["LocalPath"].rstrip("/"), True))
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
