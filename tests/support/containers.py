"""Containers on the real engine: finding a job's by label, waiting for a server's /ping."""

from __future__ import annotations

import time
from typing import Any

from shipyard.contract.labels import JOB_NAME_LABEL, SCOPE_LABEL
from tests.support.images import SESSION_SCOPE
from tests.support.net import http_request


def containers(docker_client: Any, name: str, *, running_only: bool = False) -> list[Any]:
    """This test session's containers of job or endpoint ``name`` (stopped ones too, unless
    ``running_only``)."""
    filters = {"label": [f"{JOB_NAME_LABEL}={name}", f"{SCOPE_LABEL}={SESSION_SCOPE}"]}
    # One may be removed between the listing and its inspect (another test cleaning up).
    return list(docker_client.containers.list(all=not running_only, filters=filters,
                                              ignore_removed=True))


def wait_for_ping(container: Any, timeout: float = 60) -> int:
    """The host port published for the container's 8080, once ``GET /ping`` answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        assert container.status in ("created", "running"), container.logs().decode()
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get("8080/tcp")
        if bindings:
            port = int(bindings[0]["HostPort"])
            try:
                if http_request(port, "GET", "/ping")[0] == 200:
                    return port
            except OSError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"/ping never answered 200:\n{container.logs().decode()}")
