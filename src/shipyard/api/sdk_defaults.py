"""The SageMaker Python SDK's defaults file a server writes for its data directory (docs/sdk.md).

The SDK (v2's ``sagemaker.config``, v3's ``sagemaker.core.config``) reads a YAML file named by
``SAGEMAKER_USER_CONFIG_OVERRIDE`` and fills in what the user's code leaves out. Without it,
``Estimator(...)`` with no ``role`` and ``Session().default_bucket()`` call STS at AWS's
hard-coded regional address and fail behind a firewall; with it they resolve here:

* ``SageMaker.PythonSDK.Modules.Session.DefaultS3Bucket``: ``sagemaker-<region>-<account>``,
  the name the SDK would derive itself, created in the server's store; named only when there
  is a store to hold it (the embedded one, or ``s3_endpoint_url``): with neither, the name
  would be a real AWS bucket someone else may own;
* the execution role (``api.iam.DEFAULT_ROLE_NAME``) for every resource that takes one here:
  training and processing jobs, models (batch transform runs a model and takes its role),
  and ``ModelBuilder`` (``PythonSDK.Modules.Serve``);
* ``TelemetryOptOut``: the SDK otherwise sends usage records to an AWS bucket;
* training jobs' ``OutputDataConfig.KmsKeyId``: ``alias/aws/s3``, the server's own key
  (``api.kms``), with the embedded store only (another store may have no KMS).
  ``Estimator`` uploads ``source_dir`` with SSE-KMS and the output key; with none it sends
  SSE-KMS naming no key, which AWS's S3 resolves to its managed key and SeaweedFS refuses
  (docs/s3.md).

JSON is valid YAML: the file is written with the standard library.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from shipyard.api.iam import role_arn
from shipyard.api.kms import DEFAULT_ALIAS
from shipyard.settings import Settings

__all__ = [
    "ENV_VAR",
    "FILE_NAME",
    "default_bucket",
    "document",
    "ensure_bucket",
    "path",
    "write",
]

log = logging.getLogger(__name__)

FILE_NAME = "sagemaker-config.yaml"
#: The variable both SDK majors read the user's defaults file from.
ENV_VAR = "SAGEMAKER_USER_CONFIG_OVERRIDE"


def path(settings: Settings) -> Path:
    return settings.data_dir / "sdk" / FILE_NAME


def default_bucket(settings: Settings) -> str:
    """What ``Session.default_bucket()`` derives from the caller's account and region."""
    return f"sagemaker-{settings.region}-{settings.account_id}"


def document(settings: Settings, *, with_bucket: bool, with_kms: bool = False
             ) -> dict[str, Any]:
    role = role_arn(settings.account_id)
    modules: dict[str, Any] = {"TelemetryOptOut": True, "Serve": {"RoleArn": role}}
    training: dict[str, Any] = {"RoleArn": role}
    if with_bucket:
        modules["Session"] = {"DefaultS3Bucket": default_bucket(settings)}
    if with_kms:
        training["OutputDataConfig"] = {"KmsKeyId": DEFAULT_ALIAS}
    return {
        "SchemaVersion": "1.0",
        "SageMaker": {
            "PythonSDK": {"Modules": modules},
            "TrainingJob": training,
            "ProcessingJob": {"RoleArn": role},
            "Model": {"ExecutionRoleArn": role},
        },
    }


def write(settings: Settings, *, with_bucket: bool, with_kms: bool = False) -> Path:
    """Write the file (replacing an earlier server's: the region or account may have
    changed) and return where it is."""
    target = path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(json.dumps(document(settings, with_bucket=with_bucket, with_kms=with_kms),
                              indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


def ensure_bucket(settings: Settings, url: str, key: tuple[str, str]) -> None:
    """Create the default bucket in the store at ``url`` unless it is there. A failure is
    logged, not raised: the SDK creates a missing default bucket itself on first use."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    name = default_bucket(settings)
    client = boto3.client(
        "s3", endpoint_url=url, region_name=settings.region, aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(retries={"mode": "standard", "max_attempts": 3}))
    try:
        client.create_bucket(Bucket=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            log.warning("could not create the SDK's default bucket %s in %s: %s",
                        name, url, exc)
    except BotoCoreError as exc:
        log.warning("could not create the SDK's default bucket %s in %s: %s", name, url, exc)
