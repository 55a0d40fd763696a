"""Names, ARNs and row keys of model package groups and packages, and AWS's not-found errors.

A group is found by its name or ARN; a package by its name (unversioned), ``<group>/<version>``
or its ARN (``arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>``, the
``VersionedArnOrName`` of botocore's model). ARNs hold lower-cased names, so rows are keyed by
the lower-cased name an ARN ends with: any spelling of a name, or its ARN, finds one row, and
two names that differ only in case cannot both exist (their ARNs would be one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shipyard import kinds
from shipyard.errors import ValidationError
from shipyard.settings import Settings

GROUP = kinds.MODEL_PACKAGE_GROUP
PACKAGE = kinds.MODEL_PACKAGE

_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
_ARN = re.compile(r"arn:aws[a-z\-]*:sagemaker:(?P<region>[a-z0-9\-]*):(?P<account>[0-9]{12}):"
                  r"(?P<type>[a-z\-]*)/(?P<rest>.+)")


@dataclass(frozen=True)
class PackageKey:
    """Where a package's row is: ``key`` (``<group>/<version>`` or ``<name>``, lower-cased)."""

    key: str
    group: str | None = None
    version: int | None = None

    @property
    def versioned(self) -> bool:
        return self.version is not None


def group_key(settings: Settings, name_or_arn: str) -> str:
    """The row key of a group named by ``name_or_arn``; a malformed one is not found."""
    rest = _strip_arn(settings, name_or_arn, GROUP.arn_type)
    if not _NAME.fullmatch(rest):
        raise group_not_found(settings, rest)
    return rest.lower()


def package_key(settings: Settings, name_or_arn: str) -> PackageKey:
    """The row of a package named by ``name_or_arn``: ``name``, ``group/version`` or an ARN."""
    rest = _strip_arn(settings, name_or_arn, PACKAGE.arn_type)
    name, _, version = rest.partition("/")
    if not _NAME.fullmatch(name) or (version and not re.fullmatch(r"[0-9]{1,9}", version)):
        raise package_not_found(settings, rest)
    if not version:
        return PackageKey(name.lower())
    number = int(version)
    return PackageKey(f"{name.lower()}/{number}", name.lower(), number)


def group_arn(settings: Settings, key: str) -> str:
    return GROUP.arn(key, settings.region, settings.account_id)


def package_arn(settings: Settings, key: str) -> str:
    return PACKAGE.arn(key, settings.region, settings.account_id)


def group_not_found(settings: Settings, name_or_arn: str) -> ValidationError:
    arn = name_or_arn if name_or_arn.startswith("arn:") else group_arn(settings, name_or_arn)
    return ValidationError(f"ModelPackageGroup {arn} does not exist.")


def package_not_found(settings: Settings, name_or_arn: str) -> ValidationError:
    arn = name_or_arn if name_or_arn.startswith("arn:") else package_arn(settings, name_or_arn)
    return ValidationError(f"ModelPackage {arn} does not exist.")


def _strip_arn(settings: Settings, name_or_arn: str, arn_type: str) -> str:
    """What follows ``<arn_type>/`` in an ARN of this account and region, or the name."""
    if not name_or_arn.startswith("arn:"):
        return name_or_arn
    match = _ARN.fullmatch(name_or_arn)
    if (match is None or match["type"] != arn_type or match["region"] != settings.region
            or match["account"] != settings.account_id):
        raise (group_not_found if arn_type == GROUP.arn_type else package_not_found)(
            settings, name_or_arn)
    return match["rest"]
