"""The control plane: jobs' state machines, staging, artifacts, logs and metrics."""

from __future__ import annotations

import warnings
from typing import Any

from shipyard.control.plane import CHECKED_AT_DOOR, ControlPlane

__all__ = ["CHECKED_AT_DOOR", "ControlPlane"]

#: Names that moved out of this package, and where they live now.
_MOVED = {"Settings": "shipyard.settings", "Source": "shipyard.settings"}


def __getattr__(name: str) -> Any:
    # Settings moved to the package's top so that the CLI need not load the control plane.
    if name in _MOVED:
        import importlib

        warnings.warn(f"shipyard.control.{name} moved to {_MOVED[name]}.{name}",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
