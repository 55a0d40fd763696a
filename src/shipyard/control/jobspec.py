"""Validation and layout pieces shared by training and processing jobs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard import contract
from shipyard.contract import names
from shipyard.errors import ValidationError
from shipyard.runtimes.base import Mount

_URI_SCHEMES = ("s3://", "file://", "/")


@dataclass
class HostPlan:
    """What one host's container gets: its contract root on the host and its mounts."""

    host: str
    root: Path
    mounts: list[Mount]
    entrypoint: list[str] | None
    command: list[str] | None
    env: dict[str, str] = field(default_factory=dict)


def require(doc: dict[str, Any], key: str, kind: type | None = None,
            member: str | None = None) -> Any:
    value = doc.get(key)
    if value is None or value == "":
        raise ValidationError(f"1 validation error detected: Value null at "
                              f"'{member or key[0].lower() + key[1:]}' failed to satisfy "
                              "constraint: Member must not be null")
    if kind is not None and not isinstance(value, kind):
        raise ValidationError(f"{member or key} must be a {kind.__name__}")
    return value


def check_role(req: dict[str, Any]) -> None:
    role = require(req, "RoleArn", str)
    if not 20 <= len(role) <= 2048 or not role.startswith("arn:"):
        raise names.constraint_error(
            role, "roleArn", "Member must satisfy regular expression pattern: "
            r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")


def check_image_name(image: str) -> None:
    if not 1 <= len(image) <= 255 or any(c.isspace() for c in image):
        raise ValidationError(f"Image name {image[:80]!r} is not a valid image reference")


def check_instance(resources: Any, member: str) -> None:
    if not isinstance(resources, dict):
        raise ValidationError(f"{member} must be an object")
    itype = require(resources, "InstanceType", str, f"{member}.instanceType")
    if not isinstance(itype, str) or contract.resources_for(itype) is None:
        raise names.constraint_error(
            itype, f"{member}.instanceType",
            "Member must be an ml.* instance type (e.g. ml.m5.large) or local")
    count = resources.setdefault("InstanceCount", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 100:
        raise names.constraint_error(count, f"{member}.instanceCount",
                                     "Member must have value between 1 and 100")


def check_max_runtime(stopping: Any, maximum: int) -> None:
    if not isinstance(stopping, dict):
        raise ValidationError("StoppingCondition must be an object")
    value = stopping.setdefault("MaxRuntimeInSeconds", 86400)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise names.constraint_error(value, "stoppingCondition.maxRuntimeInSeconds",
                                     f"Member must have value between 1 and {maximum}")


def check_environment(env: Any) -> None:
    if env is None:
        return
    if not isinstance(env, dict) or len(env) > 100:
        raise ValidationError("Environment must be a map of at most 100 entries")
    for key, value in env.items():
        names.check_env_key(key)
        if not isinstance(value, str) or len(value) > 512:
            raise ValidationError(f"Environment value of {key} must be a string of at most 512"
                                  " characters")
        names.check_env_value(key, value)


def check_output_uri(uri: str, member: str) -> None:
    if not uri.startswith(_URI_SCHEMES):
        raise ValidationError(f"{member} must be an s3:// or file:// URI or an absolute path,"
                              f" not {uri!r}")


def source_uri_of_channel(channel: dict[str, Any]) -> tuple[str, str, str]:
    """``(uri, S3DataType, S3DataDistributionType)`` of a training channel.

    Accepts ``S3DataSource`` (s3://, and as a Shipyard extension file:// or an absolute path)
    and the SDK local mode's ``FileDataSource {FileUri}``.
    """
    source = channel.get("DataSource")
    name = channel.get("ChannelName")
    if not isinstance(source, dict):
        raise ValidationError(f"Channel {name}: DataSource is required")
    if "S3DataSource" in source:
        s3 = source["S3DataSource"]
        if not isinstance(s3, dict):
            raise ValidationError(f"Channel {name}: S3DataSource must be an object")
        uri = require(s3, "S3Uri", str, "s3DataSource.s3Uri")
        data_type = s3.setdefault("S3DataType", "S3Prefix")
        distribution = s3.setdefault("S3DataDistributionType", "FullyReplicated")
    elif "FileDataSource" in source:
        uri = require(source["FileDataSource"], "FileUri", str, "fileDataSource.fileUri")
        data_type, distribution = "S3Prefix", "FullyReplicated"
    else:
        raise ValidationError(f"Channel {name}: DataSource needs S3DataSource or FileDataSource"
                              " (FileSystemDataSource is not supported)")
    if data_type not in ("S3Prefix", "ManifestFile"):
        raise ValidationError(f"Channel {name}: S3DataType {data_type} is not supported"
                              " (S3Prefix, ManifestFile)")
    if distribution not in ("FullyReplicated", "ShardedByS3Key"):
        raise names.constraint_error(distribution, "s3DataSource.s3DataDistributionType",
                                     "Member must satisfy enum value set: "
                                     "[FullyReplicated, ShardedByS3Key]")
    if not uri.startswith(_URI_SCHEMES):
        raise ValidationError(f"Channel {name}: {uri!r} must be an s3:// or file:// URI or an"
                              " absolute path")
    return uri, data_type, distribution


def make_host_root(root: Path) -> Path:
    """Create a host's contract root; writable folders are world-writable so images that run
    as a non-root user (as SageMaker recommends) can still write their model and output."""
    layout = contract.OptMl.at(root)
    for folder in (layout.input_config_dir, layout.input_data_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    for folder in (layout.model_dir, layout.output_dir, layout.output_data_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o777)
    return root
