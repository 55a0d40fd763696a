"""A real multi-node Docker Swarm for the cluster tests (``scripts/swarm-fixture.sh``).

The main engine becomes the swarm's manager (drained: no work runs there) and each worker is
a ``dockerd`` of its own in a network namespace. Made once per test module that asks, and
torn down after it, leaving the main engine as it was (not in a swarm). Needs root and an
engine that is not already in a swarm; in CI a missing piece is a failure, not a skip.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shipyard.control import ControlPlane
from shipyard.runtimes.swarm import SwarmRuntime
from shipyard.settings import Settings
from tests.support.images import ROOT

SCRIPT = ROOT / "scripts" / "swarm-fixture.sh"
FIXTURE_DIR = Path("/tmp/shipyard-swarm-tests")
WORKERS = 4
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class Swarm:
    """The running fixture: its workers' hostnames and engine sockets, and the manager's
    address on the fixture's bridge (every node reaches a server listening there)."""

    engines: dict[str, str]
    address: str

    def engine(self, hostname: str) -> str:
        return self.engines[hostname]

    def pid(self, hostname: str) -> int:
        """The worker's dockerd (to kill it: a node lost)."""
        index = hostname.removeprefix("shipyard-swn")
        return int((FIXTURE_DIR / f"n{index}" / "docker.pid").read_text())


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHIPYARD_SWARM_FIXTURE_DIR": str(FIXTURE_DIR)}
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def swarm(docker_client: Any) -> Iterator[Swarm]:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the swarm tests need root (network namespaces, dockerd)")
        pytest.skip("the swarm tests need root")
    if (FIXTURE_DIR / "fixture").exists():
        _run("down")  # a previous run of these tests died before its teardown
    made = _run("up", str(WORKERS))
    if made.returncode != 0:
        message = f"could not make the test swarm: {made.stderr.strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield Swarm({f"shipyard-swn{i}": f"unix://{FIXTURE_DIR}/n{i}/docker.sock"
                     for i in range(1, WORKERS + 1)}, _run("address").stdout.strip())
    finally:
        _run("down")


def swarm_runtime(swarm: Swarm, labels: dict[str, str], shared: Path,
                  **options: Any) -> SwarmRuntime:
    """A runtime on the test swarm; ``shared``: the one path its nodes share (they are on
    this machine, so every path is in truth shared; the runtime is told only this one)."""
    return SwarmRuntime(labels=labels, node_engines=swarm.engines, shared_paths=(shared,),
                        **options)


def swarm_plane(tmp: Path, swarm: Swarm, labels: dict[str, str], **settings: Any
                ) -> ControlPlane:
    """A control plane whose runtime is the test swarm; ``tmp`` holds its data directory
    and the jobs' local data, and is what the nodes share."""
    values = {"data_dir": str(tmp / "state"), "runtime": "swarm", "stop_grace_seconds": 3,
              **settings}
    runtime = swarm_runtime(swarm, labels, tmp, stop_grace_seconds=3)
    return ControlPlane(Settings.load(values, environ={}), runtime)
