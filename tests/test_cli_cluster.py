"""``shipyard cluster status`` on one engine: the capacity queue as the platform shares the
machine out (the swarm's node table is tested on a real swarm in tests/test_swarm.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import run, shipyard_env
from tests.support.swarm import IN_CI


def test_one_engine_shows_its_capacity(tmp_path: Path, docker_client: Any) -> None:
    env = shipyard_env(tmp_path / "data", capacity_memory_mb="4096", capacity_cpus="3")
    result = run(["cluster", "status"], env)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [
        "runtime: docker", "capacity: 0.0/3.0 CPUs, 0.0/4.0 GiB reserved"]
    document = json.loads(run(["cluster", "status", "--json"], env).output)
    assert document["Capacity"]["MemoryBytes"] == 4096 * 1024 * 1024
    assert document["Capacity"]["Waiting"] == []


def test_queue_off(tmp_path: Path, docker_client: Any) -> None:
    result = run(["cluster", "status"], shipyard_env(tmp_path / "data", capacity_queue="false"))
    assert result.exit_code == 0, result.output
    assert "capacity queue: off" in result.output


def test_swarm_runtime_without_a_swarm_is_a_clear_error(tmp_path: Path,
                                                        docker_client: Any) -> None:
    import docker

    assert isinstance(docker_client, docker.DockerClient)
    if docker_client.info()["Swarm"]["LocalNodeState"] != "inactive" and not IN_CI:
        pytest.skip("the engine is in a swarm (the user's): there is nothing to refuse")
    result = run(["cluster", "status"], shipyard_env(tmp_path / "data", runtime="swarm"))
    assert result.exit_code == 4, result.output
    assert "not a swarm manager" in result.output
