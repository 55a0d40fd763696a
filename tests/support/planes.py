"""Control planes for tests, over the in-memory runtime or a real engine, and endpoints
deployed and invoked through a plane directly (no API server in between)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.control import ControlPlane
from shipyard.control.endpoints.invocation import InvokeRequest
from shipyard.runtimes import Capacity, Confinement, DockerRuntime, FakeRuntime
from shipyard.settings import Settings
from tests.support.jobs import FAKE_IMAGE, ROLE
from tests.support.polling import WAIT_S


def fake_plane(tmp: Path, handler: Any = None, *, capacity: Capacity | None = None,
               **settings: Any) -> tuple[ControlPlane, FakeRuntime]:
    """A plane over a FakeRuntime that has ``FAKE_IMAGE``; ``handler`` scripts each container;
    ``capacity``: the machine it pretends to be (default: unknown, nothing is capped)."""
    runtime = FakeRuntime(handler, images=[FAKE_IMAGE], capacity=capacity)
    values = {"data_dir": str(tmp / "state"), "stop_grace_seconds": 0.3, **settings}
    return ControlPlane(Settings.load(values, environ={}), runtime), runtime


def docker_plane(tmp: Path, docker_client: Any, labels: dict[str, str], *,
                 confinement: Confinement | None = None, **settings: Any) -> ControlPlane:
    """A plane over the real engine whose containers carry ``labels`` (the test scope)."""
    runtime = DockerRuntime(docker_client, labels=labels, confinement=confinement)
    return ControlPlane(Settings.load({"data_dir": str(tmp / "state"), **settings},
                                      environ={}), runtime)


@pytest.fixture
def docker_jobs_plane(tmp_path: Path, docker_client: Any, scope_labels: dict[str, str]
                      ) -> Iterator[ControlPlane]:
    """A plane for jobs on the real engine (3 s stop grace), closed after the test. Register
    it in a test module as ``plane = planes.docker_jobs_plane``."""
    cp = docker_plane(tmp_path, docker_client, scope_labels, stop_grace_seconds=3)
    yield cp
    cp.close()


def remove_endpoints(plane: ControlPlane, timeout: float = WAIT_S) -> None:
    """Delete every endpoint and give them ``timeout`` to be gone (teardown: never fails)."""
    for row in plane.ctx.store.list_jobs("endpoint"):
        plane.delete("endpoint", row.name)
    deadline = time.monotonic() + timeout
    while plane.ctx.store.list_jobs("endpoint") and time.monotonic() < deadline:
        time.sleep(0.1)


def deploy(plane: ControlPlane, name: str, image: str, model_url: str | None, *,
           count: int = 1, env: dict[str, str] | None = None,
           variants: list[dict[str, Any]] | None = None, wait: bool = True) -> dict[str, Any]:
    """Model ``<name>-model``, config ``<name>-config`` and endpoint ``name``; its record
    once settled (``wait``), else ``{}``."""
    container: dict[str, Any] = {"Image": image, "Environment": env or {}}
    if model_url:
        container["ModelDataUrl"] = model_url
    plane.create("model", {"ModelName": f"{name}-model", "ExecutionRoleArn": ROLE,
                           "PrimaryContainer": container})
    plane.create("endpoint-config", {
        "EndpointConfigName": f"{name}-config",
        "ProductionVariants": variants or [{
            "VariantName": "AllTraffic", "ModelName": f"{name}-model",
            "InitialInstanceCount": count, "InstanceType": "local"}]})
    plane.create("endpoint", {"EndpointName": name, "EndpointConfigName": f"{name}-config"})
    return plane.wait_endpoint(name, timeout=WAIT_S) if wait else {}


class Invoker:
    """Invocations from one event loop, as the API server makes them."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.loop = asyncio.new_event_loop()

    def __call__(self, endpoint: str, body: bytes, **headers: Any) -> Any:
        return self.loop.run_until_complete(
            self.plane.invoke(InvokeRequest(endpoint=endpoint, body=body, **headers)))

    def json(self, endpoint: str, body: bytes = b"{}", **headers: Any) -> dict[str, Any]:
        return dict(json.loads(self(endpoint, body, **headers).body))

    def close(self) -> None:
        self.loop.close()
