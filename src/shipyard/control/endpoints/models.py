"""Models and endpoint configs: validated requests and the Describe documents they become.

Both are plain records (no containers run for them); endpoints and transform jobs read them
when they start. Messages for missing or duplicate ones are the strings the SageMaker SDK
matches on ("Could not find", "Cannot create already existing").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shipyard.control.jobs.spec import check_environment, require
from shipyard.control.shapes import check_request
from shipyard.errors import ValidationError

MODEL_KIND = "model"
CONFIG_KIND = "endpoint-config"
#: Rows of records without a status of their own.
CREATED = "Created"


def validate_model(request: dict[str, Any],
                   resolve: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                   ) -> dict[str, Any]:
    """Check a CreateModel request; returns a normalised deep copy.

    botocore's model first (:func:`check_request`), then ``resolve`` (the model registry:
    containers naming a ``ModelPackageName`` become the package's), then what the model
    cannot say: one container source (PrimaryContainer or Containers), an image in each, a
    ModelDataUrl for a MultiModel container, an environment a process can be given.
    """
    req = check_request("CreateModel", request)
    if resolve is not None:
        req = resolve(req)
    containers = req.get("Containers") or []
    primary = req.get("PrimaryContainer")
    if primary is None and not containers:
        raise ValidationError("Either PrimaryContainer or Containers must be provided")
    if primary is not None and containers:
        raise ValidationError("Specify either PrimaryContainer or Containers, not both")
    for index, container in enumerate([primary] if primary is not None else containers):
        where = "primaryContainer" if primary is not None else f"containers.{index + 1}.member"
        # Optional in the model: a ModelPackageName may stand for it (``resolve``).
        require(container, "Image", f"{where}.image")
        mode = container.setdefault("Mode", "SingleModel")
        if mode == "MultiModel" and not container.get("ModelDataUrl"):
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
    """Check a CreateEndpointConfig request; returns a normalised deep copy.

    botocore's model first (:func:`check_request`), then what it cannot say: unique variant
    names, a model for each (inference components are not run), instance-backed variants
    only (``local`` when no InstanceType is given).
    """
    req = check_request("CreateEndpointConfig", request)
    seen: set[str] = set()
    for index, variant in enumerate(req["ProductionVariants"]):
        where = f"productionVariants.{index + 1}.member"
        name = variant["VariantName"]
        if name in seen:
            raise ValidationError(f"The variant name(s) [{name}] is/are repeated. Variant names "
                                  "must be unique within an endpoint configuration.")
        seen.add(name)
        require(variant, "ModelName", f"{where}.modelName")
        if variant.get("ServerlessConfig") is not None:
            raise ValidationError(f"{where}: ServerlessConfig is not supported; give "
                                  "InstanceType and InitialInstanceCount")
        variant.setdefault("InstanceType", "local")
        variant.setdefault("InitialInstanceCount", 1)
        variant.setdefault("InitialVariantWeight", 1.0)
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
