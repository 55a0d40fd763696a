"""Shipped mounts (runtimes/shipping.py, runtimes/stager.py) on one real engine: the stager
runs in the base image against the server's own S3 store, filling Docker volumes a container
then reads and writes, and returning what it wrote; what a hostile container leaves there
(a link out of the folder) is refused when unpacked."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.api.s3store import SeaweedStore
from shipyard.control.depot import S3Depot
from shipyard.control.s3 import S3Client
from shipyard.errors import UnsafeArchiveError
from shipyard.runtimes.base import Mount
from shipyard.runtimes.shipping import (
    Shipped,
    collect_manifest,
    retrieve,
    stage_manifest,
    stager_command,
)
from shipyard.runtimes.stager import MANIFEST_ENV
from tests.support.files import write_tree
from tests.support.s3server import seaweed

KEY = ("SYSHIPPINGTESTKEY001", "shipping-test-secret-key-00000000000000")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedStore]:
    with seaweed(tmp_path_factory.mktemp("shipping") / "s3", KEY) as running:
        yield running


@pytest.fixture
def s3(store: SeaweedStore) -> S3Client:
    return S3Client(store.url, "us-east-1", access_key_id=KEY[0], secret_access_key=KEY[1])


@pytest.fixture
def depot(s3: S3Client) -> S3Depot:
    return S3Depot(s3, f"s3://depot-{uuid.uuid4().hex[:8]}/runs")


@pytest.fixture
def volumes(docker_client: Any, scope_labels: dict[str, str]) -> Iterator[list[str]]:
    """Names for volumes a test makes (labelled, removed after it)."""
    names = [f"shipyard-test-{uuid.uuid4().hex[:10]}-{i}" for i in range(3)]
    for name in names:
        docker_client.volumes.create(name, labels=scope_labels)
    yield names
    for name in names:
        docker_client.volumes.get(name).remove(force=True)


def _run(docker_client: Any, base_image: str, scope_labels: dict[str, str],
         command: list[str], mounts: dict[str, str], env: dict[str, str] | None = None,
         read_only: frozenset[str] = frozenset()) -> tuple[int, str]:
    """Run ``command`` in the base image with volumes ``mounts`` (name -> path); its exit
    code and output. The host's network: the store listens on its loopback."""
    import docker.types

    container = docker_client.containers.run(
        base_image, command, detach=True, network_mode="host", environment=env or {},
        labels=scope_labels, entrypoint=[],
        mounts=[docker.types.Mount(path, name, type="volume", read_only=name in read_only,
                                   no_copy=True) for name, path in mounts.items()])
    try:
        code = container.wait(timeout=120)["StatusCode"]
        return code, container.logs().decode()
    finally:
        container.remove(force=True)


def test_a_container_sees_what_was_staged_and_its_writes_come_back(
        docker_client: Any, base_image: str, scope_labels: dict[str, str], s3: S3Client,
        depot: S3Depot, volumes: list[str], tmp_path: Path) -> None:
    s3.ensure_bucket("s3://inputs")
    for key, body in {"train/a.csv": b"1,2\n", "train/deep/b.csv": b"3,4\n"}.items():
        path = tmp_path / "upload"
        path.write_bytes(body)
        s3.upload_file(path, f"s3://inputs/{key}")
    config = write_tree(tmp_path / "config", {"resourceconfig.json": '{"current_host": "x"}',
                                              "sub/hp.json": "{}"})
    (config / "link.json").symlink_to("resourceconfig.json")
    model = tmp_path / "model"
    write_tree(model, {"stale.txt": "from before"})
    os.chmod(model, 0o777)
    data = tmp_path / "data"
    data.mkdir()
    shipped = [
        Shipped(0, volumes[0], Mount(str(config), "/opt/ml/input/config", True)),
        Shipped(1, volumes[1], Mount(str(data), "/opt/ml/input/data/train", True, fetch=(
            ("s3://inputs/train/a.csv", "a.csv"), ("s3://inputs/train/deep/b.csv", "deep/b.csv")))),
        Shipped(2, volumes[2], Mount(str(model), "/opt/ml/model")),
    ]
    at = {item.volume: item.stage_path for item in shipped}
    code, out = _run(docker_client, base_image, scope_labels, stager_command("stage"), at,
                     {MANIFEST_ENV: stage_manifest(depot, "c1", shipped)})
    assert code == 0, out

    job = ("set -e; cat /opt/ml/input/config/link.json; ls -R /opt/ml/input/data/train;"
           " cat /opt/ml/input/data/train/deep/b.csv; stat -c %a /opt/ml/model;"
           " rm /opt/ml/model/stale.txt; mkdir /opt/ml/model/w; echo new > /opt/ml/model/w/f")
    code, out = _run(docker_client, base_image, scope_labels, ["sh", "-c", job],
                     {item.volume: item.mount.target for item in shipped},
                     read_only=frozenset(volumes[:2]))
    assert code == 0, out
    assert '{"current_host": "x"}' in out and "a.csv" in out and "3,4" in out
    assert "777" in out  # a writable folder stays writable for a user that is not root

    code, out = _run(docker_client, base_image, scope_labels, stager_command("collect"), at,
                     {MANIFEST_ENV: collect_manifest(depot, "c1", shipped)})
    assert code == 0, out
    retrieve(depot, "c1", shipped)
    assert sorted(str(p.relative_to(model)) for p in model.rglob("*")) == ["w", "w/f"]
    assert (model / "w" / "f").read_text() == "new\n"
    # The collector emptied every volume.
    code, out = _run(docker_client, base_image, scope_labels,
                     ["sh", "-c", "find /stage -mindepth 2 | wc -l"], at)
    assert out.strip() == "0", out


def test_a_link_out_of_the_folder_is_refused_when_unpacked(
        docker_client: Any, base_image: str, scope_labels: dict[str, str], depot: S3Depot,
        volumes: list[str], tmp_path: Path) -> None:
    output = tmp_path / "output"
    write_tree(output, {"keep.txt": "mine"})
    shipped = [Shipped(0, volumes[0], Mount(str(output), "/opt/ml/output"))]
    at = {volumes[0]: shipped[0].stage_path}
    code, out = _run(docker_client, base_image, scope_labels, stager_command("stage"), at,
                     {MANIFEST_ENV: stage_manifest(depot, "c2", shipped)})
    assert code == 0, out
    code, out = _run(docker_client, base_image, scope_labels,
                     ["sh", "-c", "ln -s /etc/shadow /opt/ml/output/failure"],
                     {volumes[0]: "/opt/ml/output"})
    assert code == 0, out
    code, out = _run(docker_client, base_image, scope_labels, stager_command("collect"), at,
                     {MANIFEST_ENV: collect_manifest(depot, "c2", shipped)})
    assert code == 0, out
    with pytest.raises(UnsafeArchiveError, match="failure"):
        retrieve(depot, "c2", shipped)
    assert (output / "keep.txt").read_text() == "mine"  # left as it was
    assert not (output / "failure").exists()


def test_a_missing_object_fails_the_stager_saying_which(
        docker_client: Any, base_image: str, scope_labels: dict[str, str], s3: S3Client,
        depot: S3Depot, volumes: list[str], tmp_path: Path) -> None:
    s3.ensure_bucket("s3://inputs")
    shipped = [Shipped(0, volumes[0], Mount(str(tmp_path), "/data", True, fetch=(
        ("s3://inputs/gone.csv", "gone.csv"),)))]
    code, out = _run(docker_client, base_image, scope_labels, stager_command("stage"),
                     {volumes[0]: shipped[0].stage_path},
                     {MANIFEST_ENV: stage_manifest(depot, "c3", shipped)})
    assert code == 1
    assert "stager stage failed" in out and "inputs/gone.csv" in out and "404" in out, out


def test_the_stager_refuses_paths_out_of_its_volume(
        docker_client: Any, base_image: str, scope_labels: dict[str, str], s3: S3Client,
        depot: S3Depot, volumes: list[str], tmp_path: Path) -> None:
    s3.ensure_bucket("s3://inputs")
    (tmp_path / "x").write_text("x")
    s3.upload_file(tmp_path / "x", "s3://inputs/x")
    shipped = [Shipped(0, volumes[0], Mount(str(tmp_path / "empty"), "/data", True, fetch=(
        ("s3://inputs/x", "../escaped"),)))]
    code, out = _run(docker_client, base_image, scope_labels, stager_command("stage"),
                     {volumes[0]: shipped[0].stage_path},
                     {MANIFEST_ENV: stage_manifest(depot, "c4", shipped)})
    assert code == 1
    assert "would land outside" in out, out
