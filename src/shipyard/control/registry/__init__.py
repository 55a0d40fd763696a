"""The model registry: model package groups, model packages (versioned in a group or
standalone), their approval, the training job each came from, and what a package deploys as
(docs/registry.md). The plane's door (``control/plane.py``) is the only caller."""

from __future__ import annotations

from shipyard.control.registry import groups, packages
from shipyard.control.registry.deploy import resolve_model
from shipyard.control.registry.lineage import SOURCE_MEMBER, JobFinder
from shipyard.errors import Conflict

__all__ = ["SOURCE_MEMBER", "Conflict", "JobFinder", "groups", "packages", "resolve_model"]
