"""What a model package deploys as: CreateModel containers that name a ``ModelPackageName``.

SageMaker resolves ``{"ModelPackageName": <arn or name>}`` (in ``Containers`` or as the
``PrimaryContainer``) to the package's inference containers: their image, model data and
environment, the model container's own ``Environment`` laid over the package's. A version of
a group must be ``Approved`` ("For versioned models, the value of this parameter must be set
to Approved to deploy the model", botocore's model); unversioned packages carry no approval.
``InferenceSpecificationName`` picks one of the package's additional inference
specifications. The model's record keeps the resolved containers, each with the
``ModelPackageName`` it came from, so endpoints and transform jobs run it as any model.
"""

from __future__ import annotations

from typing import Any

from shipyard.control.context import Context
from shipyard.control.registry import packages
from shipyard.errors import ValidationError

_MAX_CONTAINERS = 15
#: Members of a package's container a model's container takes.
_FROM_PACKAGE = ("ContainerHostname", "Image", "ModelDataUrl", "ModelDataSource",
                 "AdditionalModelDataSources")
#: Members of the model's own container kept beside the package's.
_FROM_MODEL = ("ImageConfig", "Mode", "MultiModelConfig", "ContainerMetricsConfig")


def resolve_model(ctx: Context, req: dict[str, Any]) -> dict[str, Any]:
    """A CreateModel request (already checked against botocore's model) with every container
    naming a model package replaced by that package's containers; others untouched."""
    primary = req.get("PrimaryContainer")
    if isinstance(primary, dict) and primary.get("ModelPackageName"):
        resolved = _containers(ctx, primary, "primaryContainer")
        if len(resolved) == 1:
            req["PrimaryContainer"] = resolved[0]
        else:
            # An inference pipeline: SageMaker runs a multi-container package as Containers.
            del req["PrimaryContainer"]
            req["Containers"] = resolved
    containers = req.get("Containers")
    if isinstance(containers, list) and any(
            isinstance(c, dict) and c.get("ModelPackageName") for c in containers):
        expanded: list[dict[str, Any]] = []
        for index, container in enumerate(containers):
            if isinstance(container, dict) and container.get("ModelPackageName"):
                expanded += _containers(ctx, container, f"containers.{index + 1}.member")
            else:
                expanded.append(container)
        if len(expanded) > _MAX_CONTAINERS:
            raise ValidationError(f"The model would have {len(expanded)} containers once its "
                                  f"model packages are resolved; the limit is "
                                  f"{_MAX_CONTAINERS}.")
        req["Containers"] = expanded
    return req


def _containers(ctx: Context, container: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if container.get("Image"):
        raise ValidationError(f"{where}: give either Image or ModelPackageName, not both "
                              "(a model package names its own image).")
    package = packages.describe(ctx, str(container["ModelPackageName"]))
    arn = package["ModelPackageArn"]
    if "ModelPackageVersion" in package:
        status = package.get("ModelApprovalStatus", packages.PENDING)
        if status != packages.APPROVED:
            raise ValidationError(
                f"Model package {arn} is not approved for deployment (its ModelApprovalStatus "
                f"is {status}); a version of a model package group must be Approved to deploy"
                f" it: UpdateModelPackage(ModelPackageArn='{arn}', "
                "ModelApprovalStatus='Approved').")
    spec = _specification(package, container.get("InferenceSpecificationName"))
    overrides = dict(container.get("Environment") or {})
    resolved = []
    for source in spec["Containers"]:
        target = {k: source[k] for k in _FROM_PACKAGE if source.get(k) is not None}
        target["Environment"] = {**(source.get("Environment") or {}), **overrides}
        target.update({k: container[k] for k in _FROM_MODEL if k in container})
        target["ModelPackageName"] = arn
        resolved.append(target)
    return resolved


def _specification(package: dict[str, Any], name: str | None) -> dict[str, Any]:
    arn = package["ModelPackageArn"]
    if name:
        for spec in package.get("AdditionalInferenceSpecifications") or []:
            if spec.get("Name") == name:
                return dict(spec)
        raise ValidationError(f"Model package {arn} has no additional inference specification "
                              f"named {name!r}.")
    spec = package.get("InferenceSpecification")
    if not spec or not spec.get("Containers"):
        raise ValidationError(f"Model package {arn} has no InferenceSpecification: there is "
                              "nothing to deploy.")
    return dict(spec)
