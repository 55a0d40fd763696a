"""Training jobs: request validation, the DescribeTrainingJob record, containers and outcome.

Implements CreateTrainingJob semantics (platform-api.md 3.2-3.4): channels at
``/opt/ml/input/data/<channel>``, hyperparameters.json / resourceconfig.json /
inputdataconfig.json / checkpointconfig.json, ``docker run IMAGE train`` unless
``ContainerEntrypoint``/``ContainerArguments`` say otherwise, ``model.tar.gz`` and
``output.tar.gz`` under ``{S3OutputPath}/{job}/output/``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from shipyard import contract
from shipyard.contract import names
from shipyard.contract.env import HP_SUBMIT_DIRECTORY
from shipyard.contract.paths import DEFAULT_CHECKPOINT_DIR, OptMl
from shipyard.control import records
from shipyard.control.artifacts import training_output_uris
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
    source_uri_of_channel,
)
from shipyard.control.metrics import MAX_DEFINITIONS, compile_metric_regex
from shipyard.errors import ValidationError
from shipyard.runtimes.base import Mount

KIND = "training"
CONTAINER_ROOT = OptMl()
INPUT_MODES = ("File", "FastFile", "Pipe")


def validate(request: dict[str, Any]) -> dict[str, Any]:
    """Check a CreateTrainingJob request; returns a normalised deep copy."""
    if not isinstance(request, dict):
        raise ValidationError("CreateTrainingJob request must be a JSON object")
    req = copy.deepcopy(request)
    names.check_job_name(require(req, "TrainingJobName"), "trainingJobName")
    check_role(req)
    algo = require(req, "AlgorithmSpecification", dict)
    if algo.get("AlgorithmName"):
        raise ValidationError("AlgorithmName is not supported: give AlgorithmSpecification."
                              "TrainingImage")
    check_image_name(require(algo, "TrainingImage", str, "algorithmSpecification.trainingImage"))
    mode = algo.setdefault("TrainingInputMode", "File")
    if mode not in INPUT_MODES:
        raise names.constraint_error(mode, "algorithmSpecification.trainingInputMode",
                                     f"Member must satisfy enum value set: {list(INPUT_MODES)}")
    for key in ("ContainerEntrypoint", "ContainerArguments"):
        value = algo.get(key)
        if value is not None and (not isinstance(value, list) or not 1 <= len(value) <= 100
                                  or not all(isinstance(v, str) for v in value)):
            raise ValidationError(f"AlgorithmSpecification.{key} must be a list of 1-100 strings")
    metric_defs = algo.get("MetricDefinitions") or []
    if not isinstance(metric_defs, list) or len(metric_defs) > MAX_DEFINITIONS:
        raise ValidationError(f"MetricDefinitions must be a list of at most {MAX_DEFINITIONS}")
    for definition in metric_defs:
        if not isinstance(definition, dict):
            raise ValidationError("MetricDefinitions entries must be objects with Name and Regex")
        compile_metric_regex(definition)
    _check_hyperparameters(req.get("HyperParameters"))
    channels = req.get("InputDataConfig") or []
    if not isinstance(channels, list) or len(channels) > 20:
        raise ValidationError("InputDataConfig must be a list of at most 20 channels")
    seen: set[str] = set()
    for channel in channels:
        if not isinstance(channel, dict):
            raise ValidationError("InputDataConfig entries must be objects")
        name = names.check_channel_name(require(channel, "ChannelName", str))
        if name in seen:
            raise ValidationError(f"Channel names must be unique: {name} appears twice")
        seen.add(name)
        channel_mode = channel.get("InputMode") or mode
        if channel_mode == "Pipe":
            raise ValidationError(f"Channel {name}: Pipe input mode is not supported by Shipyard;"
                                  " use File or FastFile")
        source_uri_of_channel(channel)
    output = require(req, "OutputDataConfig", dict)
    check_output_uri(require(output, "S3OutputPath", str, "outputDataConfig.s3OutputPath"),
                     "OutputDataConfig.S3OutputPath")
    # Required, as SageMaker requires it: defaulting to `local` ran a job with no limits.
    check_instance(require(req, "ResourceConfig", dict), "resourceConfig")
    stopping = req.setdefault("StoppingCondition", {"MaxRuntimeInSeconds": 86400})
    check_max_runtime(stopping, 2419200)
    checkpoint = req.get("CheckpointConfig")
    if checkpoint is not None:
        check_output_uri(require(checkpoint, "S3Uri", str), "CheckpointConfig.S3Uri")
    check_environment(req.get("Environment"))
    return req


def _check_hyperparameters(hps: Any) -> None:
    if hps is None:
        return
    if not isinstance(hps, dict):
        raise ValidationError("HyperParameters must be a map of string to string")
    if len(hps) > 100:
        raise ValidationError("HyperParameters may hold at most 100 entries")
    for key, value in hps.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValidationError(
                f"HyperParameters must map strings to strings; {key!r} maps to {value!r}"
                " (encode numbers and booleans as strings, e.g. \"0.1\", \"true\")")
        if len(key) > 256 or len(value) > 2500:
            raise ValidationError(f"HyperParameter {key[:40]!r}: keys are limited to 256 and"
                                  " values to 2500 characters")


def new_record(req: dict[str, Any], arn: str, at: float) -> dict[str, Any]:
    name = req["TrainingJobName"]
    output_path = req["OutputDataConfig"]["S3OutputPath"]
    model_uri, _ = training_output_uris(output_path, name)
    record: dict[str, Any] = {
        "TrainingJobName": name,
        "TrainingJobArn": arn,
        "TrainingJobStatus": records.IN_PROGRESS,
        "SecondaryStatus": "Starting",
        "HyperParameters": dict(req.get("HyperParameters") or {}),
        "AlgorithmSpecification": req["AlgorithmSpecification"],
        "RoleArn": req["RoleArn"],
        "InputDataConfig": req.get("InputDataConfig") or [],
        # The SDK's Estimator.attach reads KmsKeyId without a default: always present.
        "OutputDataConfig": {"KmsKeyId": "", **req["OutputDataConfig"]},
        "ResourceConfig": req["ResourceConfig"],
        "StoppingCondition": req["StoppingCondition"],
        "ModelArtifacts": {"S3ModelArtifacts": model_uri},
        "CreationTime": at,
        "LastModifiedTime": at,
        "EnableNetworkIsolation": bool(req.get("EnableNetworkIsolation", False)),
        "EnableInterContainerTrafficEncryption": bool(
            req.get("EnableInterContainerTrafficEncryption", False)),
        "EnableManagedSpotTraining": bool(req.get("EnableManagedSpotTraining", False)),
        "Environment": dict(req.get("Environment") or {}),
        "SecondaryStatusTransitions": [],
    }
    for optional in ("CheckpointConfig", "VpcConfig", "RetryStrategy", "ExperimentConfig",
                     "DebugHookConfig", "ProfilerConfig", "TensorBoardOutputConfig"):
        if optional in req:
            record[optional] = req[optional]
    records.transition(record, "Starting", "Starting the training job", at)
    return record


def submit_directory(record: dict[str, Any]) -> tuple[str, bool] | None:
    """The ``sagemaker_submit_directory`` hyperparameter decoded, and whether it was JSON.

    The SDK's framework estimators JSON-encode every value (``"\"s3://b/sourcedir.tar.gz\""``),
    the generic Estimator sends it raw; both are accepted, and written back the same way.
    """
    raw = (record.get("HyperParameters") or {}).get(HP_SUBMIT_DIRECTORY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return raw, False
    return (value, True) if isinstance(value, str) else (raw, False)


def host_locations(req: dict[str, Any]) -> list[tuple[str, str]]:
    """``(member, uri)`` of every location of a validated request that names a host path."""
    found = [(f"InputDataConfig {channel['ChannelName']}", source_uri_of_channel(channel)[0])
             for channel in req.get("InputDataConfig") or []]
    found.append(("OutputDataConfig.S3OutputPath", req["OutputDataConfig"]["S3OutputPath"]))
    if req.get("CheckpointConfig") is not None:
        found.append(("CheckpointConfig.S3Uri", req["CheckpointConfig"]["S3Uri"]))
    submit = submit_directory(req)
    if submit is not None and platform_stages_code(submit[0]):
        found.append((HP_SUBMIT_DIRECTORY, submit[0]))
    return [(member, uri) for member, uri in found if not uri.startswith("s3://")]


def platform_stages_code(uri: str) -> bool:
    """s3:// and file:// code is fetched by the platform, checked, and mounted at
    /opt/ml/code, as SDK local mode does for file://; a plain path is the image's own."""
    return uri.startswith(("s3://", "file://"))


def host_count(record: dict[str, Any]) -> int:
    return int(record["ResourceConfig"].get("InstanceCount") or 1)


def plan_hosts(
    record: dict[str, Any],
    job_dir: Path,
    channel_paths: dict[str, dict[str, Path]],
    checkpoint_dirs: dict[str, Path],
    code_dir: Path | None = None,
) -> list[HostPlan]:
    """Lay out each host's contract root and say what the container sees where."""
    hosts = contract.host_names(host_count(record))
    instance_type = record["ResourceConfig"]["InstanceType"]
    algo = record["AlgorithmSpecification"]
    hyperparameters = contract.hyperparameters(record.get("HyperParameters"))
    submit = submit_directory(record)
    if code_dir is not None and submit is not None:
        target = str(CONTAINER_ROOT.code_dir)
        hyperparameters[HP_SUBMIT_DIRECTORY] = json.dumps(target) if submit[1] else target
    plans = []
    for host in hosts:
        root = make_host_root(job_dir / "hosts" / host)
        layout = OptMl.at(root)
        contract.write_json(Path(layout.hyperparameters_file), hyperparameters)
        contract.write_json(Path(layout.resource_config_file),
                            contract.training_resource_config(host, hosts, instance_type))
        contract.write_json(Path(layout.input_data_config_file),
                            contract.input_data_config(record["InputDataConfig"],
                                                       algo.get("TrainingInputMode", "File")))
        mounts = [
            Mount(str(layout.input_config_dir), str(CONTAINER_ROOT.input_config_dir), True),
            Mount(str(layout.model_dir), str(CONTAINER_ROOT.model_dir)),
            Mount(str(layout.output_dir), str(CONTAINER_ROOT.output_dir)),
        ]
        for channel, per_host in sorted(channel_paths.items()):
            mounts.append(Mount(str(per_host[host]), str(CONTAINER_ROOT.channel_dir(channel)),
                                True))
        if code_dir is not None:
            mounts.append(Mount(str(code_dir), str(CONTAINER_ROOT.code_dir), True))
        checkpoint = record.get("CheckpointConfig")
        if checkpoint is not None:
            contract.write_json(Path(layout.checkpoint_config_file),
                                contract.checkpoint_config(checkpoint))
            local = str(checkpoint.get("LocalPath") or DEFAULT_CHECKPOINT_DIR).rstrip("/")
            mounts.append(Mount(str(checkpoint_dirs[host]), local))
        plans.append(HostPlan(
            host=host,
            root=root,
            mounts=mounts,
            entrypoint=algo.get("ContainerEntrypoint"),
            command=algo.get("ContainerArguments") or (
                None if algo.get("ContainerEntrypoint") else ["train"]),
            env={
                **record.get("Environment", {}),
                "TRAINING_JOB_NAME": record["TrainingJobName"],
                "TRAINING_JOB_ARN": record["TrainingJobArn"],
            },
        ))
    return plans
