"""``shipyard models register | ls | describe | approve | reject | deploy``: the model registry
(model package groups and their versions, docs/registry.md) through SageMaker's API.

The server decides what is valid; this module turns options into requests, says which
training job a version came from (``SourceTrainingJobArn``, read from the server's JSON since
boto3 drops members its model lacks), and refuses before calling the server what it can tell
alone: model data without ``--image``, a status a version already has, deploying a version
that is not Approved.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from shipyard import kinds
from shipyard.cli.deploy import create_model_and_config, follow
from shipyard.cli.endpoints import (
    CREATED_BY_DEPLOY,
    CREATED_BY_TAG,
    ENDPOINT_TAG,
    cli_prefix,
    find_endpoint,
    remove_deployed,
)
from shipyard.cli.errors import CliError, ExitCode
from shipyard.cli.output import open_client
from shipyard.cli.parsing import to_uri
from shipyard.client import Client
from shipyard.errors import Conflict, ShipyardError, ValidationError
from shipyard.settings import Settings

APPROVED = "Approved"
REJECTED = "Rejected"
PENDING = "PendingManualApproval"
STATUSES = (PENDING, APPROVED, REJECTED)
#: The Shipyard member of a package's record naming the training job that produced it.
SOURCE_MEMBER = "SourceTrainingJobArn"
_TRAINING_ARN = re.compile(r"arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]*:[0-9]{12}:training-job/"
                           r"(?P<name>.+)")
_PACKAGE_ARN = re.compile(r"arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]*:[0-9]{12}:model-package/.+")


@contextlib.contextmanager
def registry_errors() -> Iterator[None]:
    """The registry's not-found answers (``ModelPackage <arn> does not exist.``, a
    ValidationException on the wire) exit NOT_FOUND; its conflicts exit USAGE."""
    try:
        yield
    except ValidationError as exc:
        code = ExitCode.NOT_FOUND if str(exc).endswith("does not exist.") else ExitCode.USAGE
        raise CliError(str(exc), code) from exc
    except Conflict as exc:
        raise CliError(str(exc), ExitCode.USAGE) from exc


def _stamp(value: Any) -> str:
    if value in (None, ""):
        return "-"
    when = value if isinstance(value, dt.datetime) else dt.datetime.fromtimestamp(float(value))
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _is_package(name_or_arn: str) -> bool:
    """A version (``group/N`` or its ARN) or an unversioned package's ARN."""
    return bool(_PACKAGE_ARN.fullmatch(name_or_arn)) or "/" in name_or_arn


def describe_package(client: Client, name_or_arn: str) -> dict[str, Any]:
    """DescribeModelPackage as the server's JSON (lineage kept); missing: NOT_FOUND."""
    with registry_errors():
        return client.raw_call("DescribeModelPackage", ModelPackageName=name_or_arn)


def describe_group(client: Client, name_or_arn: str) -> dict[str, Any]:
    with registry_errors():
        return client.raw_call("DescribeModelPackageGroup", ModelPackageGroupName=name_or_arn)


def _find_group(client: Client, name: str) -> dict[str, Any] | None:
    try:
        return describe_group(client, name)
    except CliError as exc:
        if exc.code == ExitCode.NOT_FOUND:
            return None
        raise


def versions(client: Client, group: str | None, status: str | None) -> list[dict[str, Any]]:
    """ListModelPackages: the versions of ``group`` (every group's when None), newest first."""
    params: dict[str, Any] = {"ModelPackageType": "Versioned", "SortBy": "CreationTime",
                              "SortOrder": "Descending"}
    if group:
        params["ModelPackageGroupName"] = group
    if status:
        params["ModelApprovalStatus"] = status
    out: list[dict[str, Any]] = []
    with registry_errors():
        while True:
            page = client.call("ListModelPackages", **params)
            out.extend(page["ModelPackageSummaryList"])
            if not page.get("NextToken"):
                return out
            params["NextToken"] = page["NextToken"]


def _groups(client: Client) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"SortBy": "CreationTime", "SortOrder": "Descending"}
    out: list[dict[str, Any]] = []
    with registry_errors():
        while True:
            page = client.call("ListModelPackageGroups", **params)
            out.extend(page["ModelPackageGroupSummaryList"])
            if not page.get("NextToken"):
                return out
            params["NextToken"] = page["NextToken"]


# ------------------------------------------------------------------------------ register


def _from_training_job(client: Client, name: str) -> dict[str, Any] | None:
    """The DescribeTrainingJob record of ``name`` (a name or ARN), or None when no such job."""
    match = _TRAINING_ARN.fullmatch(name)
    try:
        return client.describe(kinds.TRAINING.key, match["name"] if match else name)
    except ShipyardError as exc:
        if "not found" in str(exc).lower():
            return None
        raise


def _source(client: Client, value: str, image: str | None) -> tuple[dict[str, Any], str | None]:
    """The inference container ``register`` puts in the version, and the training job's ARN
    when ``value`` names one."""
    local = "://" not in value and Path(value).expanduser().exists()
    job = None if "://" in value or local else _from_training_job(client, value)
    if job is None:
        if "://" not in value and not local:
            raise CliError(f"{value}: no training job of that name, and no such file or "
                           "folder", ExitCode.NOT_FOUND)
        if not image:
            raise CliError("model data needs --image, the image that serves it",
                           ExitCode.USAGE)
        return {"Image": image, "ModelDataUrl": to_uri(value)}, None
    status = job["TrainingJobStatus"]
    if status != "Completed":
        raise CliError(f"training job {job['TrainingJobName']} is {status}: only a Completed "
                       "job's model can be registered", ExitCode.USAGE)
    container = {"Image": image or job["AlgorithmSpecification"]["TrainingImage"],
                 "ModelDataUrl": job["ModelArtifacts"]["S3ModelArtifacts"]}
    return container, str(job["TrainingJobArn"])


@click.group()
def models() -> None:
    """The model registry: versions of a model package group, approved, then deployed."""


@models.command()
@click.argument("job_or_model_data")
@click.option("--group", required=True, help="Model package group the version goes in.")
@click.option("--image", help="Inference image (default: a training job's image; needed for "
                              "model data).")
@click.option("--approve", is_flag=True, help="Register the version Approved.")
@click.option("--description", help="ModelPackageDescription.")
@click.option("--create-group", is_flag=True, help="Create the group when it does not exist.")
@click.option("--json", "as_json", is_flag=True, help="Print the version's record as JSON.")
@click.pass_obj
def register(settings: Settings, job_or_model_data: str, group: str, image: str | None,
             approve: bool, description: str | None, create_group: bool,
             as_json: bool) -> None:
    """Register a new version of a model in GROUP (CreateModelPackage).

    JOB_OR_MODEL_DATA is a Completed training job's name or ARN (its image and model archive;
    the version records which job produced it), or model data (s3://, file://, a local
    model.tar.gz or folder) with --image.
    """
    client = open_client(settings)
    container, job_arn = _source(client, job_or_model_data, image)
    if _find_group(client, group) is None:
        if not create_group:
            raise CliError(f"no model package group named {group} (--create-group creates it)",
                           ExitCode.NOT_FOUND)
        with registry_errors():
            client.call("CreateModelPackageGroup", ModelPackageGroupName=group)
        click.echo(f"Created model package group {group}", err=True)
    request: dict[str, Any] = {
        "ModelPackageGroupName": group,
        "InferenceSpecification": {"Containers": [container]},
        "ModelApprovalStatus": APPROVED if approve else PENDING}
    if description:
        request["ModelPackageDescription"] = description
    if job_arn:
        request["MetadataProperties"] = {"GeneratedBy": job_arn}
    with registry_errors():
        arn = client.call("CreateModelPackage", **request)["ModelPackageArn"]
    record = describe_package(client, arn)
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        return
    source = f" from training job {job_arn.rsplit('/', 1)[1]}" if job_arn else ""
    click.echo(f"Registered version {record['ModelPackageVersion']} of {group}{source}: "
               f"{record['ModelApprovalStatus']}", err=True)
    if not approve:
        click.echo(f"Approve it with: {cli_prefix(settings)} models approve {arn} "
                   "--note TEXT", err=True)
    click.echo(arn)


# ------------------------------------------------------------------------------ ls, describe


@models.command("ls")
@click.option("--group", help="List this group's versions (default: the groups).")
@click.option("--status", type=click.Choice(STATUSES),
              help="Only versions with this approval status (every group's without --group).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def ls(settings: Settings, group: str | None, status: str | None, as_json: bool) -> None:
    """Model package groups, newest first; with --group or --status, versions."""
    client = open_client(settings)
    if group is None and status is None:
        rows = [{"Name": g["ModelPackageGroupName"], "Arn": g["ModelPackageGroupArn"],
                 "Description": g.get("ModelPackageGroupDescription", ""),
                 "CreationTime": _epoch(g["CreationTime"])} for g in _groups(client)]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        click.echo(f"{'GROUP':<48} {'CREATED':<19} DESCRIPTION")
        for row in rows:
            click.echo(f"{row['Name']:<48} {_stamp(row['CreationTime']):<19} "
                       f"{row['Description']}")
        return
    if group is not None and _find_group(client, group) is None:
        raise CliError(f"no model package group named {group}", ExitCode.NOT_FOUND)
    rows = [{"Group": v["ModelPackageGroupName"], "Version": v.get("ModelPackageVersion"),
             "Status": v.get("ModelApprovalStatus"), "Arn": v["ModelPackageArn"],
             "CreationTime": _epoch(v["CreationTime"])}
            for v in versions(client, group, status)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'GROUP':<32} {'VERSION':<8} {'STATUS':<22} {'CREATED':<19} ARN")
    for row in rows:
        click.echo(f"{row['Group']:<32} {row['Version']!s:<8} {row['Status']:<22} "
                   f"{_stamp(row['CreationTime']):<19} {row['Arn']}")


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, dt.datetime) else float(value)


@models.command()
@click.argument("name_or_arn")
@click.option("--json", "as_json", is_flag=True, help="The Describe record, whole.")
@click.pass_obj
def describe(settings: Settings, name_or_arn: str, as_json: bool) -> None:
    """A group (name or ARN: its versions too) or a version (ARN or GROUP/VERSION): key
    fields, the training job it came from included (--json: the Describe record)."""
    client = open_client(settings)
    if not _is_package(name_or_arn):
        group = _find_group(client, name_or_arn)
        if group is not None:
            _describe_group(client, group, as_json=as_json)
            return
    record = describe_package(client, name_or_arn)
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        return
    containers = (record.get("InferenceSpecification") or {}).get("Containers") or []
    fields = [("ARN", record["ModelPackageArn"])]
    if record.get("ModelPackageVersion"):
        fields += [("Group", record["ModelPackageGroupName"]),
                   ("Version", record["ModelPackageVersion"])]
    else:
        fields.append(("Name", record["ModelPackageName"]))
    fields += [("Status", record.get("ModelPackageStatus")),
               ("Approval", record.get("ModelApprovalStatus", "-")),
               ("Approval note", record.get("ApprovalDescription", "-")),
               ("Description", record.get("ModelPackageDescription", "-")),
               ("Training job", record.get(SOURCE_MEMBER, "-")),
               ("Created", _stamp(record.get("CreationTime"))),
               ("Modified", _stamp(record.get("LastModifiedTime")))]
    for i, container in enumerate(containers):
        suffix = f" {i + 1}" if len(containers) > 1 else ""
        fields += [(f"Image{suffix}", container.get("Image", "-")),
                   (f"Model data{suffix}", container.get("ModelDataUrl") or (
                       container.get("ModelDataSource") or {}).get("S3DataSource", {}).get(
                           "S3Uri", "-"))]
    width = max(len(k) for k, _ in fields) + 1
    for key, value in fields:
        click.echo(f"{key + ':':<{width}} {value}")


def _describe_group(client: Client, group: dict[str, Any], *, as_json: bool) -> None:
    held = versions(client, group["ModelPackageGroupArn"], None)
    if as_json:
        click.echo(json.dumps({**group, "Versions": held}, indent=2, default=str))
        return
    click.echo(f"Group:       {group['ModelPackageGroupName']}\n"
               f"ARN:         {group['ModelPackageGroupArn']}\n"
               f"Description: {group.get('ModelPackageGroupDescription', '-')}\n"
               f"Created:     {_stamp(group.get('CreationTime'))}\n"
               f"Versions:    {len(held)}")
    for v in held:
        click.echo(f"  {v.get('ModelPackageVersion')!s:<6} {v.get('ModelApprovalStatus'):<22} "
                   f"{_stamp(v['CreationTime'])}  {v['ModelPackageArn']}")


# ------------------------------------------------------------------------------ approval


def _set_approval(settings: Settings, arn: str, status: str, note: str) -> None:
    client = open_client(settings)
    record = describe_package(client, arn)
    if not record.get("ModelPackageVersion"):
        raise CliError(f"{record['ModelPackageArn']} is an unversioned model package: "
                       "approval applies to versions of a group only", ExitCode.USAGE)
    if record.get("ModelApprovalStatus") == status:
        raise CliError(f"version {record['ModelPackageVersion']} of "
                       f"{record['ModelPackageGroupName']} is already {status}", ExitCode.USAGE)
    with registry_errors():
        client.call("UpdateModelPackage", ModelPackageArn=record["ModelPackageArn"],
                    ModelApprovalStatus=status, ApprovalDescription=note)
    click.echo(f"Version {record['ModelPackageVersion']} of {record['ModelPackageGroupName']}: "
               f"{record.get('ModelApprovalStatus')} -> {status}", err=True)


@models.command()
@click.argument("version_arn")
@click.option("--note", required=True, help="ApprovalDescription: why.")
@click.pass_obj
def approve(settings: Settings, version_arn: str, note: str) -> None:
    """Approve a version (UpdateModelPackage): it may then be deployed."""
    _set_approval(settings, version_arn, APPROVED, note)


@models.command()
@click.argument("version_arn")
@click.option("--note", required=True, help="ApprovalDescription: why.")
@click.pass_obj
def reject(settings: Settings, version_arn: str, note: str) -> None:
    """Reject a version (UpdateModelPackage): it can no longer be deployed."""
    _set_approval(settings, version_arn, REJECTED, note)


# ------------------------------------------------------------------------------ deploy


@models.command("deploy")
@click.argument("version_arn")
@click.option("--name", required=True, help="Endpoint name; the model and endpoint config are "
                                            "named after it.")
@click.option("--instance-type", default="local", show_default=True,
              help="local or an ml.* type (its CPU and memory limits apply).")
@click.option("--instance-count", default=1, show_default=True, type=int)
@click.option("--no-wait", is_flag=True, help="Return once the endpoint is being created.")
@click.pass_obj
def deploy_version(settings: Settings, version_arn: str, name: str, instance_type: str,
                   instance_count: int, no_wait: bool) -> None:
    """Serve an Approved version behind a new endpoint NAME (CreateModel from the package,
    CreateEndpointConfig, CreateEndpoint), then wait until it is InService."""
    client = open_client(settings)
    record = describe_package(client, version_arn)
    arn = str(record["ModelPackageArn"])
    status = record.get("ModelApprovalStatus")
    if record.get("ModelPackageVersion") and status != APPROVED:
        raise CliError(f"version {record['ModelPackageVersion']} of "
                       f"{record['ModelPackageGroupName']} is {status}, not Approved: approve "
                       f"it first with `{cli_prefix(settings)} models approve {arn} --note "
                       "TEXT`", ExitCode.USAGE)
    if find_endpoint(client, name) is not None:
        raise CliError(f"endpoint {name} already exists: `shipyard endpoints delete {name}` "
                       "removes it", ExitCode.USAGE)
    tags = [{"Key": CREATED_BY_TAG, "Value": CREATED_BY_DEPLOY},
            {"Key": ENDPOINT_TAG, "Value": name}]
    with registry_errors():
        create_model_and_config(client,
                {"ModelName": name, "PrimaryContainer": {"ModelPackageName": arn},
                 "Tags": tags,
                 "ExecutionRoleArn": f"arn:aws:iam::{settings.account_id}:role/shipyard"},
                {"EndpointConfigName": name, "Tags": tags, "ProductionVariants": [{
                    "VariantName": "AllTraffic", "ModelName": name,
                    "InstanceType": instance_type, "InitialInstanceCount": instance_count,
                    "InitialVariantWeight": 1.0}]})
    try:
        endpoint_arn = client.call("CreateEndpoint", EndpointName=name,
                                   EndpointConfigName=name, Tags=tags)["EndpointArn"]
    except ShipyardError:
        remove_deployed(client, name, name)
        raise
    if no_wait:
        click.echo(endpoint_arn)
        return
    click.echo(f"Endpoint {name} created ({endpoint_arn}) from {arn}", err=True)
    follow(client, settings, name, name)
