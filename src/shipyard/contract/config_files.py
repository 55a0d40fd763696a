"""The config files the platform writes into the container, exactly as SageMaker writes them.

Pure functions from API request shapes (SageMaker's field names) to the JSON documents;
the control plane writes them, the toolkit reads them, so both sides agree by construction.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HOMOGENEOUS_GROUP = "homogeneousCluster"
NETWORK_INTERFACE = "eth0"


def host_names(count: int) -> list[str]:
    """``algo-1`` .. ``algo-N``; SageMaker sorts ``hosts`` lexicographically."""
    return sorted(f"algo-{i}" for i in range(1, count + 1))


def hyperparameters(values: Mapping[str, str] | None) -> dict[str, str]:
    """hyperparameters.json: the API map as given; every value is a string."""
    return {str(k): str(v) for k, v in (values or {}).items()}


def training_resource_config(
    current_host: str, hosts: Sequence[str], instance_type: str
) -> dict[str, Any]:
    """resourceconfig.json for training, with the fields production jobs carry."""
    return {
        "current_host": current_host,
        "current_instance_type": instance_type,
        "current_group_name": HOMOGENEOUS_GROUP,
        "hosts": list(hosts),
        "instance_groups": [
            {
                "instance_group_name": HOMOGENEOUS_GROUP,
                "instance_type": instance_type,
                "hosts": list(hosts),
            }
        ],
        "network_interface_name": NETWORK_INTERFACE,
        "topology": None,
    }


def processing_resource_config(current_host: str, hosts: Sequence[str]) -> dict[str, Any]:
    """/opt/ml/config/resourceconfig.json for processing: only host names."""
    return {"current_host": current_host, "hosts": list(hosts)}


def input_data_config(
    channels: Sequence[Mapping[str, Any]], default_input_mode: str = "File"
) -> dict[str, dict[str, str]]:
    """inputdataconfig.json keyed by channel, as SageMaker writes it for File mode."""
    config: dict[str, dict[str, str]] = {}
    for channel in channels:
        entry: dict[str, str] = {}
        if channel.get("ContentType"):
            entry["ContentType"] = str(channel["ContentType"])
        entry["TrainingInputMode"] = str(channel.get("InputMode") or default_input_mode)
        s3 = (channel.get("DataSource") or {}).get("S3DataSource") or {}
        entry["S3DistributionType"] = str(s3.get("S3DataDistributionType") or "FullyReplicated")
        entry["RecordWrapperType"] = str(channel.get("RecordWrapperType") or "None")
        config[str(channel["ChannelName"])] = entry
    return config


def checkpoint_config(config: Mapping[str, Any]) -> dict[str, str]:
    """checkpointconfig.json, present only when CheckpointConfig is set."""
    return {
        "S3Uri": str(config["S3Uri"]),
        "LocalPath": str(config.get("LocalPath") or "/opt/ml/checkpoints/"),
    }


def write_json(path: Path, document: Any) -> None:
    """Write atomically, so a reader never sees half a config file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document)
    # A name per call: two writers sharing one temporary file would rename each other's
    # half-written document into place.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
