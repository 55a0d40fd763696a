"""What the control plane's door checks beyond botocore's model, and host layout, shared by
the job kinds, models and endpoint configs.

Every create starts with :func:`shipyard.control.shapes.check_request`: types, required
members, lengths, patterns, enums and ranges, in AWS's words. What is left for the kinds is
here: members SageMaker's model leaves optional that Shipyard needs, limits AWS enforces
beyond its model, the locations Shipyard can read, and values no process can be given.
"""

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
#: Instances of one job (training's model says only "at least 0", transform's "at least 1").
MAX_INSTANCE_COUNT = 100


@dataclass
class HostPlan:
    """What one host's container gets: its contract root on the host and its mounts."""

    host: str
    root: Path
    mounts: list[Mount]
    entrypoint: list[str] | None
    command: list[str] | None
    env: dict[str, str] = field(default_factory=dict)


def require(doc: dict[str, Any], key: str, member: str | None = None) -> Any:
    """``doc[key]``, a member SageMaker's model leaves optional that Shipyard needs, refused
    in AWS's words when absent or empty."""
    value = doc.get(key)
    if value is None or value == "":
        raise ValidationError(f"1 validation error detected: Value null at "
                              f"'{member or key[0].lower() + key[1:]}' failed to satisfy "
                              "constraint: Member must not be null")
    return value


def check_image_name(image: str) -> None:
    """An image reference a container engine can pull: AlgorithmImage and ImageUri allow any
    text (``.*``)."""
    if any(c.isspace() for c in image):
        raise ValidationError(f"Image name {image[:80]!r} is not a valid image reference")


def check_instance(resources: dict[str, Any], member: str) -> None:
    """``InstanceType``, optional in the models (for instance groups, which Shipyard does not
    run), and ``InstanceCount``: 1 when absent, at most 100."""
    require(resources, "InstanceType", f"{member}.instanceType")
    count = resources.setdefault("InstanceCount", 1)
    if not 1 <= count <= MAX_INSTANCE_COUNT:
        raise names.constraint_error(count, f"{member}.instanceCount",
                                     f"Member must have value between 1 and {MAX_INSTANCE_COUNT}")


def check_max_runtime(stopping: dict[str, Any], maximum: int) -> None:
    """``MaxRuntimeInSeconds``: a day when absent, at most ``maximum`` (the model says only
    "at least 1" for training jobs)."""
    value = stopping.setdefault("MaxRuntimeInSeconds", 86400)
    if value > maximum:
        raise names.constraint_error(value, "stoppingCondition.maxRuntimeInSeconds",
                                     f"Member must have value between 1 and {maximum}")


def check_environment(env: dict[str, str] | None) -> None:
    """An ``Environment`` a process can be given. Its size, keys and value lengths are the
    model's (100 entries for jobs and models, 16 for transform jobs); its pattern
    (``[\\S\\s]*``) lets a NUL through."""
    for key, value in (env or {}).items():
        names.check_env_value(key, value)


def check_output_uri(uri: str, member: str) -> None:
    """A location Shipyard can read or write: the model's ``S3Uri`` also allows https://."""
    if not uri.startswith(_URI_SCHEMES):
        raise ValidationError(f"{member} must be an s3:// or file:// URI or an absolute path,"
                              f" not {uri!r}")


def source_uri_of_channel(channel: dict[str, Any]) -> tuple[str, str, str]:
    """``(uri, S3DataType, S3DataDistributionType)`` of a checked training channel.

    Accepts ``S3DataSource`` (s3://, and as a Shipyard extension file:// or an absolute path)
    and the SDK local mode's ``FileDataSource {FileUri}``.
    """
    source = channel["DataSource"]
    name = channel["ChannelName"]
    if "S3DataSource" in source:
        s3 = source["S3DataSource"]
        uri, data_type = s3["S3Uri"], s3["S3DataType"]
        distribution = s3.setdefault("S3DataDistributionType", "FullyReplicated")
    elif "FileDataSource" in source:
        # SDK local mode's own member: SageMaker's model does not know it.
        file_source = source["FileDataSource"]
        uri = require(file_source if isinstance(file_source, dict) else {}, "FileUri",
                      "fileDataSource.fileUri")
        if not isinstance(uri, str):
            raise ValidationError(f"Channel {name}: FileDataSource.FileUri must be a string")
        data_type, distribution = "S3Prefix", "FullyReplicated"
    else:
        raise ValidationError(f"Channel {name}: DataSource needs S3DataSource or FileDataSource"
                              " (FileSystemDataSource and DatasetSource are not supported)")
    if data_type not in ("S3Prefix", "ManifestFile"):
        raise ValidationError(f"Channel {name}: S3DataType {data_type} is not supported"
                              " (S3Prefix, ManifestFile)")
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
