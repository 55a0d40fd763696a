"""The model registry: groups, a group's versions, approve and reject."""

from __future__ import annotations

from shipyard import kinds
from shipyard.console.context import PageContext
from shipyard.console.http import Response, redirect
from shipyard.errors import ValidationError

__all__ = ["approval", "group", "groups"]

DECISIONS = {"approve": "Approved", "reject": "Rejected"}


def groups(ctx: PageContext) -> Response:
    found = ctx.plane.list_resources(kinds.MODEL_PACKAGE_GROUP.key, limit=1000)
    counts = {}
    for record in found:
        name = str(record["ModelPackageGroupName"])
        counts[name] = len(ctx.plane.list_resources(kinds.MODEL_PACKAGE.key, group=name))
    return ctx.render("registry.html", groups=found, counts=counts)


def group(ctx: PageContext) -> Response:
    name = ctx.request.params["group"]
    record = ctx.plane.describe(kinds.MODEL_PACKAGE_GROUP.key, name)
    versions = ctx.plane.list_resources(kinds.MODEL_PACKAGE.key, group=name, descending=True)
    return ctx.render("group.html", name=name, record=record, versions=versions)


def approval(ctx: PageContext) -> Response:
    """Approve or reject one version (UpdateModelPackage), as the session's key."""
    name, version = ctx.request.params["group"], ctx.request.params["version"]
    decision = DECISIONS.get(ctx.request.form.get("decision", ""))
    if decision is None:
        raise ValidationError("decision must be approve or reject")
    record = ctx.plane.describe(kinds.MODEL_PACKAGE.key, f"{name}/{version}")
    caller = {"UserProfileName": ctx.session.access_key if ctx.session else "console"}
    ctx.plane.update_model_package({"ModelPackageArn": record["ModelPackageArn"],
                                    "ModelApprovalStatus": decision}, caller=caller)
    return redirect(ctx.request.url(f"/registry/{name}"))
