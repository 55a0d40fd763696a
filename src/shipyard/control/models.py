"""Models and endpoint configs: validated requests and the Describe documents they become.

Both are plain records (no containers run for them); endpoints and transform jobs read them
when they start. Messages for missing or duplicate ones are the strings the SageMaker SDK
matches on ("Could not find", "Cannot create already existing").
"""

from __future__ import annotations

import copy
from typing import Any

from shipyard import contract
from shipyard.contract import names
from shipyard.control.jobspec import check_environment, check_image_name, require
from shipyard.errors import ValidationError

MODEL_KIND = "model"
CONFIG_KIND = "endpoint-config"
#: Rows of records without a status of their own.
CREATED = "Created"
MAX_VARIANTS = 10
MODES = ("SingleModel", "MultiModel")
#: SageMaker's bounds for ContainerStartupHealthCheckTimeoutInSeconds.
STARTUP_TIMEOUT_RANGE = (60, 3600)


def validate_model(request: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(request, dict):
        raise ValidationError("CreateModel request must be a JSON object")
    req = copy.deepcopy(request)
    names.check_job_name(require(req, "ModelName"), "modelName")
    containers = req.get("Containers")
    primary = req.get("PrimaryContainer")
    if primary is None and not containers:
        raise ValidationError("Either PrimaryContainer or Containers must be provided")
    if primary is not None and containers:
        raise ValidationError("Specify either PrimaryContainer or Containers, not both")
    for index, container in enumerate([primary] if primary is not None else list(containers or [])):
        where = "primaryContainer" if primary is not None else f"containers.{index + 1}"
        if not isinstance(container, dict):
            raise ValidationError(f"{where} must be an object")
        check_image_name(require(container, "Image", str, f"{where}.image"))
        mode = container.setdefault("Mode", "SingleModel")
        if mode not in MODES:
            raise names.constraint_error(mode, f"{where}.mode",
                                         f"Member must satisfy enum value set: {list(MODES)}")
        url = container.get("ModelDataUrl")
        if url is not None and (not isinstance(url, str) or not url):
            raise ValidationError(f"{where}.modelDataUrl must be a non-empty string")
        if mode == "MultiModel" and not url:
            raise ValidationError(f"{where}: a MultiModel container needs ModelDataUrl, the "
                                  "prefix its models are loaded from")
        check_environment(container.get("Environment"))
    return req


def host_locations(req: dict[str, Any]) -> list[tuple[str, str]]:
    """``(member, uri)`` of every ModelDataUrl of a validated request that names a host path."""
    primary = req.get("PrimaryContainer")
    containers = [primary] if primary is not None else list(req.get("Containers") or [])
    found = [(f"Containers {index + 1} ModelDataUrl" if primary is None
              else "PrimaryContainer.ModelDataUrl", container.get("ModelDataUrl"))
             for index, container in enumerate(containers)]
    return [(member, url) for member, url in found
            if isinstance(url, str) and not url.startswith("s3://")]


def new_model(req: dict[str, Any], arn: str, at: float) -> dict[str, Any]:
    record: dict[str, Any] = {"ModelName": req["ModelName"], "ModelArn": arn, "CreationTime": at}
    for key in ("PrimaryContainer", "Containers", "InferenceExecutionConfig",
                "ExecutionRoleArn", "VpcConfig", "EnableNetworkIsolation"):
        if key in req:
            record[key] = req[key]
    record.setdefault("EnableNetworkIsolation", False)
    return record


def validate_endpoint_config(request: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(request, dict):
        raise ValidationError("CreateEndpointConfig request must be a JSON object")
    req = copy.deepcopy(request)
    names.check_job_name(require(req, "EndpointConfigName"), "endpointConfigName")
    variants = require(req, "ProductionVariants", list)
    if not 1 <= len(variants) <= MAX_VARIANTS:
        raise names.constraint_error(len(variants), "productionVariants",
                                     f"Member must have length between 1 and {MAX_VARIANTS}")
    seen: set[str] = set()
    for index, variant in enumerate(variants):
        where = f"productionVariants.{index + 1}"
        if not isinstance(variant, dict):
            raise ValidationError(f"{where} must be an object")
        name = require(variant, "VariantName", str, f"{where}.variantName")
        names.check_job_name(name, f"{where}.variantName")
        if name in seen:
            raise ValidationError(f"The variant name(s) [{name}] is/are repeated. Variant names "
                                  "must be unique within an endpoint configuration.")
        seen.add(name)
        require(variant, "ModelName", str, f"{where}.modelName")
        if variant.get("ServerlessConfig") is not None:
            raise ValidationError(f"{where}: ServerlessConfig is not supported; give "
                                  "InstanceType and InitialInstanceCount")
        itype = variant.setdefault("InstanceType", "local")
        if not isinstance(itype, str) or contract.resources_for(itype) is None:
            raise names.constraint_error(itype, f"{where}.instanceType",
                                         "Member must be an ml.* instance type or local")
        count = variant.setdefault("InitialInstanceCount", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise names.constraint_error(count, f"{where}.initialInstanceCount",
                                         "Member must have value greater than or equal to 1")
        weight = variant.setdefault("InitialVariantWeight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise names.constraint_error(weight, f"{where}.initialVariantWeight",
                                         "Member must have value greater than or equal to 0")
        timeout = variant.get("ContainerStartupHealthCheckTimeoutInSeconds")
        low, high = STARTUP_TIMEOUT_RANGE
        if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)
                                    or not low <= timeout <= high):
            raise names.constraint_error(
                timeout, f"{where}.containerStartupHealthCheckTimeoutInSeconds",
                f"Member must have value between {low} and {high}")
    return req


def new_endpoint_config(req: dict[str, Any], arn: str, at: float) -> dict[str, Any]:
    record: dict[str, Any] = {"EndpointConfigName": req["EndpointConfigName"],
                              "EndpointConfigArn": arn, "CreationTime": at}
    for key in ("ProductionVariants", "DataCaptureConfig", "KmsKeyId", "AsyncInferenceConfig",
                "ExplainerConfig", "ShadowProductionVariants", "ExecutionRoleArn",
                "VpcConfig", "EnableNetworkIsolation"):
        if key in req:
            record[key] = req[key]
    return record


def not_found(kind: str, arn: str) -> ValidationError:
    label = {MODEL_KIND: "model", CONFIG_KIND: "endpoint configuration",
             "endpoint": "endpoint"}[kind]
    return ValidationError(f'Could not find {label} "{arn}".')
