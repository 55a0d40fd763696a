"""Where containers run: one small interface, three implementations.

- :class:`DockerRuntime`: the local Docker engine, the reference for the SageMaker contract;
- :class:`ProcessRuntime`: no engine; each container is a supervised local process tree;
- :class:`FakeRuntime`: in memory, driven by a handler, for control-plane tests.

Importing this package never imports the Docker SDK; :func:`default_runtime` picks an
implementation at call time.
"""

from __future__ import annotations

from pathlib import Path

from shipyard.contract.labels import (
    HOST_LABEL,
    JOB_KIND_LABEL,
    JOB_NAME_LABEL,
    MANAGED_LABEL,
    SCOPE_LABEL,
)
from shipyard.errors import RuntimeUnavailable
from shipyard.runtimes.base import (
    Capacity,
    Confinement,
    ContainerSpec,
    ContainerState,
    LogLine,
    Mount,
    Runtime,
)
from shipyard.runtimes.docker import DockerRuntime
from shipyard.runtimes.fake import FakeBehaviour, FakeRuntime
from shipyard.runtimes.process import ProcessRuntime

__all__ = [
    "HOST_LABEL",
    "JOB_KIND_LABEL",
    "JOB_NAME_LABEL",
    "MANAGED_LABEL",
    "SCOPE_LABEL",
    "Capacity",
    "Confinement",
    "ContainerSpec",
    "ContainerState",
    "DockerRuntime",
    "FakeBehaviour",
    "FakeRuntime",
    "LogLine",
    "Mount",
    "ProcessRuntime",
    "Runtime",
    "default_runtime",
]


def default_runtime(data_dir: Path, labels: dict[str, str] | None = None,
                    confinement: Confinement | None = None) -> Runtime:
    """The local Docker engine when it answers a ping, else processes under ``data_dir``."""
    try:
        runtime = DockerRuntime(labels=labels, confinement=confinement)
    except (RuntimeUnavailable, ImportError):
        return ProcessRuntime(Path(data_dir) / "processes")
    try:
        runtime.ping()
    except RuntimeUnavailable:
        runtime.close()
        return ProcessRuntime(Path(data_dir) / "processes")
    return runtime
