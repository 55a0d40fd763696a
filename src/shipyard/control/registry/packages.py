"""Model packages: CreateModelPackage, DescribeModelPackage, ListModelPackages,
UpdateModelPackage and DeleteModelPackage.

A versioned package lives in a group (``ModelPackageGroupName``) and is numbered 1, 2, 3...
in the order its creates reach the group's lock; an unversioned one is named
(``ModelPackageName``). A package is a record: ``ModelPackageStatus`` is ``Completed`` once
CreateModelPackage answers (Shipyard runs no validation or image scan). What a version holds
is fixed when it is created; UpdateModelPackage changes only what its request names
(approval, customer metadata, additional inference specifications, source URI, model card,
life cycle), each update recording who and when (``LastModifiedBy``, ``LastModifiedTime``).
Every request is checked whole before anything is written, and every change is one atomic
read-modify-write of the row (``Store.mutate``).
"""

from __future__ import annotations

from typing import Any

from shipyard.control.context import Context
from shipyard.control.jobs.accept import confine
from shipyard.control.jobs.spec import check_environment, check_image_name, require
from shipyard.control.registry import groups, lineage, names
from shipyard.control.registry.lineage import JobFinder
from shipyard.control.registry.names import PACKAGE
from shipyard.control.shapes import check_request
from shipyard.control.state import records
from shipyard.errors import ResourceInUse, ResourceNotFound, ValidationError

APPROVED = "Approved"
PENDING = "PendingManualApproval"
COMPLETED = "Completed"
#: Members of a CreateModelPackage request kept as they are in the record.
_KEPT = ("ModelPackageDescription", "InferenceSpecification", "SourceAlgorithmSpecification",
         "ValidationSpecification", "CertifyForMarketplace", "MetadataProperties",
         "ModelMetrics", "Domain", "Task", "SamplePayloadUrl", "CustomerMetadataProperties",
         "DriftCheckBaselines", "AdditionalInferenceSpecifications", "SkipModelValidation",
         "SourceUri", "SecurityConfig", "ModelCard", "ModelLifeCycle",
         "ModelPackageRegistrationType")
_MAX_METADATA = 50
_MAX_SPECIFICATIONS = 15


def create(ctx: Context, request: dict[str, Any], caller: dict[str, Any],
           find_job: JobFinder) -> str:
    """A CreateModelPackage request (its ``Tags`` already taken off); answers its ARN."""
    req = check_request("CreateModelPackage", request)
    name, group = req.get("ModelPackageName"), req.get("ModelPackageGroupName")
    if name and group:
        raise ValidationError("Both ModelPackageName and ModelPackageGroupName are provided in "
                              "the input. Cannot determine which one to use.")
    if not name and not group:
        raise ValidationError(
            "1 validation error detected: Value null at 'modelPackageGroupName' failed to "
            "satisfy constraint: Member must not be null (a versioned package names its "
            "ModelPackageGroupName, an unversioned one its ModelPackageName)")
    if name and req.get("SourceUri"):
        raise ValidationError("An unversioned model package cannot be created with SourceUri.")
    if "InferenceSpecification" not in req and req.get("SourceUri"):
        populated = _from_source(ctx, req["SourceUri"])
        if populated is not None:
            req["InferenceSpecification"] = populated
    _check_specifications(ctx, req.get("InferenceSpecification"),
                          req.get("AdditionalInferenceSpecifications") or [])
    source_job = lineage.source_job(ctx, req, find_job)
    at = records.now()
    record: dict[str, Any] = {k: req[k] for k in _KEPT if k in req}
    record.setdefault("CertifyForMarketplace", False)
    record.setdefault("ModelPackageRegistrationType", "Registered")
    record.update(
        ModelPackageStatus=COMPLETED,
        ModelPackageStatusDetails=_status_details(req),
        CreationTime=at, CreatedBy=dict(caller), LastModifiedTime=at,
        LastModifiedBy=dict(caller))
    if source_job is not None:
        lineage.record(record, source_job)
    token = req.get("ClientToken")
    if group:
        return _create_version(ctx, group, record, req.get("ModelApprovalStatus"), token)
    return _create_unversioned(ctx, str(name), record, token)


def describe(ctx: Context, name_or_arn: str) -> dict[str, Any]:
    found = names.package_key(ctx.settings, name_or_arn)
    try:
        return ctx.store.get_job(PACKAGE.key, found.key).record
    except ResourceNotFound:
        raise names.package_not_found(ctx.settings, name_or_arn) from None


def listing(ctx: Context, *, group: str | None = None, approval: str | None = None,
            package_type: str | None = None, name_contains: str | None = None,
            created_after: float | None = None, created_before: float | None = None,
            sort_by: str = "CreationTime", descending: bool = False, offset: int = 0,
            limit: int | None = None) -> list[dict[str, Any]]:
    """Packages as ListModelPackages sees them, filtered, sorted, from ``offset`` on (at
    most ``limit`` of them).

    ``package_type``: ``Versioned``, ``Unversioned`` or ``Both``; absent, it is
    ``Unversioned`` (botocore's model) unless a group is named, whose versions are listed.
    """
    prefix = None
    if group:
        prefix = names.group_key(ctx.settings, group) + "/"
    kind = package_type or ("Versioned" if group else "Unversioned")
    rows = ctx.store.list_jobs(PACKAGE.key, name_contains=prefix,
                               created_after=created_after, created_before=created_before)
    needle = (name_contains or "").lower()
    found = []
    for row in rows:
        versioned = "/" in row.name
        if prefix is not None and not row.name.startswith(prefix):
            continue
        if (kind == "Versioned" and not versioned) or (kind == "Unversioned" and versioned):
            continue
        record = row.record
        if approval and record.get("ModelApprovalStatus") != approval:
            continue
        if needle and needle not in str(record.get("ModelPackageName", "")).lower():
            continue
        found.append(record)

    def order(record: dict[str, Any]) -> tuple[Any, ...]:
        by_name = (str(record.get("ModelPackageName", "")).lower(),
                   int(record.get("ModelPackageVersion") or 0))
        return by_name if sort_by == "Name" else (record["CreationTime"], *by_name)

    found.sort(key=order, reverse=descending)
    return found[offset:] if limit is None else found[offset:offset + limit]


def update(ctx: Context, request: dict[str, Any], caller: dict[str, Any]) -> str:
    """An UpdateModelPackage request: one atomic change of the package, or none."""
    req = check_request("UpdateModelPackage", request)
    arn = req["ModelPackageArn"]
    found = names.package_key(ctx.settings, arn)
    adding = dict(req.get("CustomerMetadataProperties") or {})
    removing = list(req.get("CustomerMetadataPropertiesToRemove") or [])
    if set(adding) & set(removing):
        raise ValidationError("CustomerMetadataProperties and CustomerMetadataPropertiesToRemove"
                              f" name the same keys: {sorted(set(adding) & set(removing))}")
    source = req.get("SourceUri")
    populated = _from_source(ctx, source) if source else None
    extra = list(req.get("AdditionalInferenceSpecificationsToAdd") or [])
    _check_specifications(ctx, req.get("InferenceSpecification"), extra)
    at = records.now()

    def change(rec: dict[str, Any], runner: dict[str, Any]) -> None:
        where = rec["ModelPackageArn"]
        approval = req.get("ModelApprovalStatus")
        if (approval is not None or "ApprovalDescription" in req) and (
                "ModelPackageVersion" not in rec):
            raise ValidationError(f"{where} is an unversioned model package: "
                                  "ModelApprovalStatus and ApprovalDescription apply to the "
                                  "versions of a model package group only.")
        if approval is not None:
            rec["ModelApprovalStatus"] = approval
        if "ApprovalDescription" in req:
            rec["ApprovalDescription"] = req["ApprovalDescription"]
        if adding or removing:
            metadata = {**(rec.get("CustomerMetadataProperties") or {}), **adding}
            for key in removing:
                metadata.pop(key, None)
            if len(metadata) > _MAX_METADATA:
                raise ValidationError(f"{where} would have {len(metadata)} "
                                      f"CustomerMetadataProperties; the limit is "
                                      f"{_MAX_METADATA}.")
            rec["CustomerMetadataProperties"] = metadata
            if not metadata:
                del rec["CustomerMetadataProperties"]
        if "InferenceSpecification" in req:
            if rec.get("InferenceSpecification"):
                raise ValidationError(f"The InferenceSpecification of {where} is set and cannot "
                                      "be changed; register a new version instead.")
            rec["InferenceSpecification"] = req["InferenceSpecification"]
        if extra:
            _add_specifications(rec, extra)
        if source:
            rec["SourceUri"] = source
            if populated is not None and not rec.get("InferenceSpecification"):
                rec["InferenceSpecification"] = populated
        for member in ("ModelCard", "ModelLifeCycle", "ModelPackageRegistrationType"):
            if member in req:
                rec[member] = req[member]
        rec["LastModifiedTime"] = at
        rec["LastModifiedBy"] = dict(caller)

    try:
        row = ctx.store.mutate(PACKAGE.key, found.key, change)
    except ResourceNotFound:
        raise names.package_not_found(ctx.settings, arn) from None
    return str(row.record["ModelPackageArn"])


def delete(ctx: Context, name_or_arn: str) -> None:
    """DeleteModelPackage: the package and its tags are forgotten; its version number is
    not given out again."""
    found = names.package_key(ctx.settings, name_or_arn)
    describe(ctx, name_or_arn)
    ctx.store.delete_job(PACKAGE.key, found.key)


# -- creating ---------------------------------------------------------------------------------
def _create_version(ctx: Context, group: str, record: dict[str, Any], approval: str | None,
                    token: str | None) -> str:
    key = names.group_key(ctx.settings, group)
    with groups.locked(ctx, key):
        if token:
            prefix = f"{key}/"
            for row in ctx.store.list_jobs(PACKAGE.key, name_contains=prefix):
                if row.name.startswith(prefix) and row.runner.get("client_token") == token:
                    return row.arn
        group_name, number = groups.next_version(ctx, key, group)
        # Numbered and timed under the lock: creation order is version order.
        at = records.now()
        record.update(CreationTime=at, LastModifiedTime=at)
        row_key = f"{key}/{number}"
        arn = names.package_arn(ctx.settings, row_key)
        record.update(ModelPackageName=group_name, ModelPackageGroupName=group_name,
                      ModelPackageVersion=number, ModelPackageArn=arn,
                      ModelApprovalStatus=approval or PENDING)
        ctx.store.insert_job(PACKAGE.key, row_key, arn, COMPLETED, _ordered(record),
                             {"client_token": token} if token else {})
    return arn


def _create_unversioned(ctx: Context, name: str, record: dict[str, Any],
                        token: str | None) -> str:
    key = name.lower()
    arn = names.package_arn(ctx.settings, key)
    # ModelApprovalStatus "does not apply to unversioned models" (botocore's model).
    record.update(ModelPackageName=name, ModelPackageArn=arn)
    try:
        ctx.store.insert_job(PACKAGE.key, key, arn, COMPLETED, _ordered(record),
                             {"client_token": token} if token else {})
    except ResourceInUse:
        existing = ctx.store.get_job(PACKAGE.key, key)
        if token and existing.runner.get("client_token") == token:
            return arn
        # The SageMaker SDK matches "ModelPackage already exists" and goes on.
        raise ValidationError(f"ModelPackage already exists: {arn}") from None
    return arn


def _ordered(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its identifying members first, as DescribeModelPackage lists them."""
    first = ("ModelPackageName", "ModelPackageGroupName", "ModelPackageVersion",
             "ModelPackageArn", "ModelPackageDescription", "CreationTime")
    return {**{k: record[k] for k in first if k in record}, **record}


def _status_details(req: dict[str, Any]) -> dict[str, Any]:
    """``ModelPackageStatusDetails``: each validation profile listed, not run by Shipyard."""
    profiles = (req.get("ValidationSpecification") or {}).get("ValidationProfiles") or []
    return {"ValidationStatuses": [{"Name": p["ProfileName"], "Status": "NotStarted"}
                                   for p in profiles],
            "ImageScanStatuses": []}


# -- inference specifications -----------------------------------------------------------------
def _check_specifications(ctx: Context, main: dict[str, Any] | None,
                          extra: list[dict[str, Any]]) -> None:
    """What botocore's model leaves optional that deploying needs: an image in each container
    (one the runtime can name), an environment a process can be given, model data Shipyard
    may read; and names unique among the additional specifications."""
    specs = ([("inferenceSpecification", main)] if main else []) + [
        (f"additionalInferenceSpecifications.{i + 1}.member", spec)
        for i, spec in enumerate(extra)]
    seen: set[str] = set()
    for where, spec in specs:
        name = spec.get("Name")
        if name is not None:
            if name in seen:
                raise ValidationError(f"AdditionalInferenceSpecifications name {name!r} is "
                                      "repeated: names must be unique within a package.")
            seen.add(name)
        for index, container in enumerate(spec["Containers"]):
            at = f"{where}.containers.{index + 1}.member"
            image = require(container, "Image", f"{at}.image")
            check_image_name(image)
            ctx.runtime.check_reference(image)
            check_environment(container.get("Environment"))
            url = container.get("ModelDataUrl")
            if isinstance(url, str) and not url.startswith(("s3://", "https://")):
                confine(ctx, [(f"{at}.modelDataUrl", url)])


def _add_specifications(rec: dict[str, Any], extra: list[dict[str, Any]]) -> None:
    current = list(rec.get("AdditionalInferenceSpecifications") or [])
    taken = {spec["Name"] for spec in current}
    for spec in extra:
        if spec["Name"] in taken:
            raise ValidationError(f"{rec['ModelPackageArn']} already has an additional "
                                  f"inference specification named {spec['Name']!r}.")
        taken.add(spec["Name"])
        current.append(spec)
    if len(current) > _MAX_SPECIFICATIONS:
        raise ValidationError(f"{rec['ModelPackageArn']} would have {len(current)} additional "
                              f"inference specifications; the limit is {_MAX_SPECIFICATIONS}.")
    rec["AdditionalInferenceSpecifications"] = current


def _from_source(ctx: Context, source: str) -> dict[str, Any] | None:
    """The InferenceSpecification a ``SourceUri`` naming a model or a model package of this
    account fills in (the SageMaker SDK leaves it out of the request then); None for other
    sources (kept as the record's ``SourceUri`` only)."""
    settings = ctx.settings
    model_prefix = f"arn:aws:sagemaker:{settings.region}:{settings.account_id}:model/"
    if source.startswith(model_prefix):
        # Model rows are keyed by the name as created; their ARNs lower-case it.
        found = [row.record for row in ctx.store.list_jobs("model") if row.arn == source]
        if not found:
            raise ValidationError(f'SourceUri: Could not find model "{source}".')
        model = found[0]
        containers = [model["PrimaryContainer"]] if model.get("PrimaryContainer") else list(
            model.get("Containers") or [])
        keep = ("ContainerHostname", "Image", "ModelDataUrl", "ModelDataSource", "Environment")
        return {"Containers": [{k: c[k] for k in keep if c.get(k)} for c in containers]}
    if source.startswith(f"arn:aws:sagemaker:{settings.region}:{settings.account_id}:"
                         "model-package/"):
        spec = describe(ctx, source).get("InferenceSpecification")
        return dict(spec) if spec else None
    return None
