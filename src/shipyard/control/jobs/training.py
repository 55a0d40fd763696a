"""Training jobs: request validation, the DescribeTrainingJob record, containers and outcome.

Implements CreateTrainingJob semantics (platform-api.md 3.2-3.4): channels at
``/opt/ml/input/data/<channel>``, hyperparameters.json / resourceconfig.json /
inputdataconfig.json / checkpointconfig.json, ``docker run IMAGE train`` unless
``ContainerEntrypoint``/``ContainerArguments`` say otherwise, ``model.tar.gz`` and
``output.tar.gz`` under ``{S3OutputPath}/{job}/output/``. :class:`TrainingJobs` is the kind
the plane and the supervisor drive: code and checkpoints staged, the archives uploaded,
secondary statuses as SageMaker reports them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from shipyard import contract, kinds
from shipyard.contract.env import HP_SUBMIT_DIRECTORY
from shipyard.contract.paths import DEFAULT_CHECKPOINT_DIR, OptMl
from shipyard.control import artifacts, staging
from shipyard.control.artifacts import training_output_uris
from shipyard.control.context import Context
from shipyard.control.jobs.kind import (
    MAX_RUNTIME,
    Describe,
    JobServices,
    Outcome,
    Preflight,
    Supervised,
    stage_inputs,
)
from shipyard.control.jobs.metrics import compile_metric_regex, final_metric_data
from shipyard.control.jobs.spec import (
    HostPlan,
    check_environment,
    check_image_name,
    check_instance,
    check_max_runtime,
    check_output_uri,
    make_host_root,
    require,
    source_uri_of_channel,
)
from shipyard.control.shapes import check_request
from shipyard.control.state import records
from shipyard.control.unpack import check_archive, safe_extract
from shipyard.errors import ValidationError
from shipyard.runtimes.base import Mount

CONTAINER_ROOT = OptMl()
#: MaxRuntimeInSeconds: 28 days (the model says only "at least 1").
MAX_RUNTIME_SECONDS = 2419200


def validate(request: dict[str, Any]) -> dict[str, Any]:
    """Check a CreateTrainingJob request; returns a normalised deep copy.

    botocore's model first (:func:`check_request`), then what it cannot say: the members
    Shipyard needs that it leaves optional (an image to run, the resources to run it on),
    what Shipyard does not run (built-in algorithms, Pipe mode), where data can be read from,
    metric regexes Python can compile, unique channel names.
    """
    req = check_request("CreateTrainingJob", request)
    algo = require(req, "AlgorithmSpecification")
    if algo.get("AlgorithmName"):
        raise ValidationError("AlgorithmName is not supported: give AlgorithmSpecification."
                              "TrainingImage")
    check_image_name(require(algo, "TrainingImage", "algorithmSpecification.trainingImage"))
    for definition in algo.get("MetricDefinitions") or []:
        compile_metric_regex(definition)
    seen: set[str] = set()
    for channel in req.get("InputDataConfig") or []:
        name = channel["ChannelName"]
        if name in seen:
            raise ValidationError(f"Channel names must be unique: {name} appears twice")
        seen.add(name)
        if (channel.get("InputMode") or algo["TrainingInputMode"]) == "Pipe":
            raise ValidationError(f"Channel {name}: Pipe input mode is not supported by Shipyard;"
                                  " use File or FastFile")
        source_uri_of_channel(channel)
    check_output_uri(req["OutputDataConfig"]["S3OutputPath"], "OutputDataConfig.S3OutputPath")
    # Required, as SageMaker requires it: defaulting to `local` ran a job with no limits.
    check_instance(require(req, "ResourceConfig"), "resourceConfig")
    check_max_runtime(req.setdefault("StoppingCondition", {}), MAX_RUNTIME_SECONDS)
    checkpoint = req.get("CheckpointConfig")
    if checkpoint is not None:
        check_output_uri(checkpoint["S3Uri"], "CheckpointConfig.S3Uri")
    check_environment(req.get("Environment"))
    return req


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
    channel_paths: dict[str, dict[str, staging.StagedPath]],
    checkpoint_dirs: dict[str, Path],
    code_dir: Path | None = None,
    writable: frozenset[str] = frozenset(),
) -> list[HostPlan]:
    """Lay out each host's contract root and say what the container sees where; the
    channels in ``writable`` are the host's own copies (``staging.private_copies``)."""
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
            staged = per_host[host]
            mounts.append(Mount(str(staged.host_path), str(CONTAINER_ROOT.channel_dir(channel)),
                                channel not in writable, fetch=staged.fetch))
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


class TrainingJobs(Supervised):
    kind = kinds.TRAINING

    # -- the door ---------------------------------------------------------------------------
    validate = staticmethod(validate)
    locations = staticmethod(host_locations)
    new_record = staticmethod(new_record)

    def preflight(self, req: dict[str, Any], ctx: Context, describe: Describe) -> Preflight:
        submit = submit_directory(req)
        if submit is not None and submit[0].startswith("file://"):
            code = staging.local_path_from_uri(submit[0], ctx.file_roots)
            if code.is_file():
                # A bad archive is the user's to fix: refused now, not after the job started.
                check_archive(code, Path("/opt/ml/code"))
        return Preflight(self.image(req),
                         [source_uri_of_channel(c)[0] for c in req.get("InputDataConfig") or []],
                         self.host_count(req), self.resources(req)["InstanceType"])

    # -- the supervisor ---------------------------------------------------------------------
    def image(self, record: dict[str, Any]) -> str:
        return str(record["AlgorithmSpecification"]["TrainingImage"])

    def resources(self, record: dict[str, Any]) -> dict[str, Any]:
        return dict(record["ResourceConfig"])

    def host_count(self, record: dict[str, Any]) -> int:
        return host_count(record)

    def network_isolated(self, record: dict[str, Any]) -> bool:
        return bool(record.get("EnableNetworkIsolation"))

    def metric_definitions(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        return list(record["AlgorithmSpecification"].get("MetricDefinitions") or [])

    def plan(self, job: JobServices, record: dict[str, Any], job_dir: Path) -> list[HostPlan]:
        hosts = contract.host_names(host_count(record))
        job.transition("Downloading", "Downloading input data")
        channels, writable = stage_inputs(
            job, [(c["ChannelName"], *source_uri_of_channel(c))
                  for c in record["InputDataConfig"]], hosts, job_dir)
        checkpoints = _restore_checkpoints(job, record, job_dir, hosts)
        return plan_hosts(record, job_dir, channels, checkpoints,
                          _stage_code(job, record, job_dir), writable)

    def started(self, record: dict[str, Any], at: float, notice: str = "") -> None:
        record["TrainingStartTime"] = at
        # The SDK prints each new transition's message: where a user of fit() sees it.
        message = "Training image download completed. Training in progress."
        records.transition(record, "Training", f"{message} {notice}".strip(), at)

    def transition(self, record: dict[str, Any], status: str, message: str, at: float) -> None:
        records.transition(record, status, message, at)

    def deliver(self, job: JobServices, record: dict[str, Any], roots: dict[str, Path],
                status: str, job_dir: Path) -> None:
        model_uri, output_uri = artifacts.training_output_uris(
            record["OutputDataConfig"]["S3OutputPath"], job.name)
        if status != records.FAILED:
            merged = job_dir / "merged-model"
            artifacts.merge_dirs([Path(OptMl.at(r).model_dir) for r in roots.values()], merged)
            artifacts.pack_and_upload(merged, job.destination(model_uri), job.s3_for(model_uri))
        merged_out = job_dir / "merged-output"
        artifacts.merge_dirs([Path(OptMl.at(r).output_data_dir) for r in roots.values()],
                             merged_out)
        artifacts.pack_and_upload(merged_out, job.destination(output_uri),
                                  job.s3_for(output_uri))
        checkpoint = record.get("CheckpointConfig")
        if checkpoint is not None and checkpoint["S3Uri"].startswith("s3://"):
            for host in roots:
                artifacts.upload_dir(job_dir / "checkpoints" / host, checkpoint["S3Uri"],
                                     job.s3_for(checkpoint["S3Uri"]))

    def complete(self, record: dict[str, Any], outcome: Outcome) -> None:
        end = outcome.end
        if outcome.series:
            record["FinalMetricDataList"] = final_metric_data(outcome.series)
        if "TrainingStartTime" in record:
            record["TrainingEndTime"] = end
            seconds = max(1, round(end - outcome.started))
            record["TrainingTimeInSeconds"] = seconds
            record["BillableTimeInSeconds"] = seconds
        secondary, message = {
            records.COMPLETED: ("Completed", "Training job completed"),
            records.STOPPED: ("Stopped", "Training job stopped"),
        }.get(outcome.status,
              ("Failed", f"Training job failed. Reason: {outcome.reason or ''}"[:1024]))
        if not (outcome.trigger == MAX_RUNTIME and outcome.status == records.FAILED):
            records.transition(record, secondary, message, end)
        else:
            # MaxRuntimeExceeded stays the last secondary status, as SageMaker leaves it.
            transitions = record.get("SecondaryStatusTransitions") or []
            if transitions and "EndTime" not in transitions[-1]:
                transitions[-1]["EndTime"] = end

    def failed_early(self, record: dict[str, Any], reason: str, at: float) -> None:
        records.transition(record, "Failed", f"Training job failed. Reason: {reason}"[:1024], at)


def _stage_code(job: JobServices, record: dict[str, Any], job_dir: Path) -> Path | None:
    """Fetch an s3:// or file:// submit directory; tarballs are checked, then extracted."""
    submit = submit_directory(record)
    if submit is None or not platform_stages_code(submit[0]):
        return None
    uri = submit[0]
    if uri.startswith("s3://"):
        source = job_dir / "code-download" / "sourcedir.tar.gz"
        job.ctx.s3.download_file(uri, source)
    else:
        source = staging.local_path_from_uri(uri, job.ctx.file_roots)
        if source.is_dir():
            return source
    code = job_dir / "code"
    safe_extract(source, code)
    return code


def _restore_checkpoints(job: JobServices, record: dict[str, Any], job_dir: Path,
                         hosts: list[str]) -> dict[str, Path]:
    """SageMaker restores CheckpointConfig.S3Uri into the local path before training and
    syncs it back. A file:// or local checkpoint location is mounted read-write as it is,
    which is that sync without a copy; an s3:// one is downloaded now, uploaded at the end.
    """
    config = record.get("CheckpointConfig")
    if config is None:
        return {}
    uri = config["S3Uri"]
    if not uri.startswith("s3://"):
        folder = job.ctx.file_roots.path(uri, "CheckpointConfig.S3Uri")
        folder.mkdir(parents=True, exist_ok=True)
        return {host: folder for host in hosts}
    dirs = {}
    s3 = job.ctx.s3
    existing = s3.list_objects(uri)
    for host in hosts:
        folder = job_dir / "checkpoints" / host
        if existing:
            staged = staging.stage_input(uri, "S3Prefix", "FullyReplicated", [host],
                                         job_dir / "checkpoint-staging" / host, s3)
            shutil.copytree(staged[host].host_path, folder, dirs_exist_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)
        dirs[host] = folder
    return dirs
