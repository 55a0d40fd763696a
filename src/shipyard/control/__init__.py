"""The control plane: jobs' state machines, staging, artifacts, logs and metrics."""

from shipyard.control.plane import ControlPlane
from shipyard.control.settings import Settings, Source

__all__ = ["ControlPlane", "Settings", "Source"]
