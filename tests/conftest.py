"""Shared fixtures: a real Docker engine, the base image, and cleanup by label."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import BASE_IMAGE, ROOT, SESSION_LABELS, SESSION_SCOPE

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_configure(config: pytest.Config) -> None:
    # Servers that tests start as processes inherit this environment: each would otherwise
    # run a SeaweedFS (~250 MB, a few seconds) on the one default port. Tests of the store
    # ask for it (tests/test_s3store.py).
    os.environ.setdefault("SHIPYARD_EMBEDDED_S3", "false")
    os.environ.setdefault("SHIPYARD_S3_PORT", "0")


def _engine_missing(reason: str) -> None:
    # In CI a missing engine is a failure, never a silent skip.
    if IN_CI:
        pytest.fail(f"Docker engine required in CI: {reason}")
    pytest.skip(f"no Docker engine: {reason}")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        _engine_missing(str(exc))
        raise
    yield client
    scope = {"label": [f"org.shipyard.scope={SESSION_SCOPE}"]}
    # Another session on the same engine may be removing the same things: ignore races.
    for container in client.containers.list(all=True, filters=scope):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)
    for network in client.networks.list(filters=scope):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            network.remove()
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client: object) -> str:
    import docker

    assert isinstance(docker_client, docker.DockerClient)
    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        subprocess.run(["bash", str(ROOT / "scripts" / "base-image.sh")], check=True)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def images(docker_client: object, base_image: str) -> dict[str, str]:
    """The workload images (tests/support/workloads.py), keyed by name."""
    from tests.support.workloads import build_all

    return build_all(docker_client)


@pytest.fixture
def scope_labels() -> dict[str, str]:
    """Labels every container a test starts must carry (cleanup finds them by these)."""
    return dict(SESSION_LABELS)


@pytest.fixture
def repo_root() -> Path:
    return ROOT
