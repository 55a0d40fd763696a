"""Single objects sent outside botocore (``control.s3_direct``), against the store the server
ships (SeaweedFS checks every signature): keys AWS allows but URLs must encode, what falls
back to botocore and why, and a store that refuses the signature."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.api.s3store import SeaweedStore
from shipyard.control.s3 import S3Client
from shipyard.control.s3_direct import DirectS3, NotDirect
from tests.support.s3server import DEPOT_KEY, depot_boto, seaweed

#: Keys a URL must encode: spaces, a plus, unicode, reserved characters, a double slash.
ODD_KEYS = ["plain.txt", "with space/and+plus.csv", "unicodé/ß-ü.bin", "a=b&c;d,e:f@g$h!",
            "double//slash", "tilde~paren(1)*'.txt", "%41-already-percent"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedStore]:
    with seaweed(tmp_path_factory.mktemp("direct") / "s3", DEPOT_KEY) as running:
        depot_boto(running).create_bucket(Bucket="direct")
        yield running


def client(store: SeaweedStore, secret: str = DEPOT_KEY[1]) -> S3Client:
    return S3Client(store.url, "us-east-1", 4, access_key_id=DEPOT_KEY[0],
                    secret_access_key=secret)


def test_odd_keys_go_and_come_back_through_the_direct_path(
        store: SeaweedStore, tmp_path: Path) -> None:
    s3 = client(store)
    boto = depot_boto(store)
    for n, key in enumerate(ODD_KEYS):
        source = tmp_path / f"in-{n}"
        source.write_bytes(key.encode() * (1000 + n))
        s3.upload_file(source, f"s3://direct/{key}")
        # What the store holds under that very key, read by boto3.
        assert boto.get_object(Bucket="direct", Key=key)["Body"].read() == source.read_bytes()
        dest = tmp_path / f"out-{n}"
        s3.download_file(f"s3://direct/{key}", dest)
        assert dest.read_bytes() == source.read_bytes()
    assert s3._direct is not None and s3._direct.enabled  # nothing was refused
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    s3.upload_file(empty, "s3://direct/empty")
    s3.download_file("s3://direct/empty", tmp_path / "empty-back")
    assert (tmp_path / "empty-back").read_bytes() == b""


def test_many_threads_share_nothing_but_the_store(store: SeaweedStore, tmp_path: Path) -> None:
    s3 = client(store)
    folder = tmp_path / "many"
    for n in range(200):
        (folder / f"d{n % 7}").mkdir(parents=True, exist_ok=True)
        (folder / f"d{n % 7}" / f"f{n}").write_bytes(bytes([n % 256]) * (n * 97))
    uploaded = s3.upload_dir(folder, "s3://direct/many")
    assert len(uploaded) == 200
    pairs = [(uri, tmp_path / "back" / uri.split("/many/")[1]) for uri in uploaded]
    s3.download_many(pairs)
    for uri, dest in pairs:
        assert dest.read_bytes() == (folder / uri.split("/many/")[1]).read_bytes()


def test_what_the_direct_path_does_not_handle_goes_to_botocore(
        store: SeaweedStore, tmp_path: Path) -> None:
    direct = DirectS3(store.url, "us-east-1")
    credentials = (DEPOT_KEY[0], DEPOT_KEY[1], None)
    source = tmp_path / "big"
    source.write_bytes(b"x" * 5000)
    with pytest.raises(NotDirect):
        direct.put("direct", "big", source, credentials, max_bytes=4999)
    direct.put("direct", "big", source, credentials, max_bytes=10**6)
    # Larger than the caller takes in one request: not read, not kept.
    with pytest.raises(NotDirect):
        direct.get("direct", "big", tmp_path / "partial", credentials, max_bytes=4999)
    with pytest.raises(NotDirect, match="404"):
        direct.get("direct", "missing", tmp_path / "partial", credentials, max_bytes=10**6)
    assert direct.enabled
    direct.get("direct", "big", tmp_path / "whole", credentials, max_bytes=10**6)
    assert (tmp_path / "whole").read_bytes() == b"x" * 5000
    # The S3 client's own errors are botocore's, as before.
    s3 = client(store)
    from shipyard.errors import DataSourceError

    with pytest.raises(DataSourceError, match="no such key"):
        s3.download_file("s3://direct/missing", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_a_refused_signature_turns_the_direct_path_off(
        store: SeaweedStore, tmp_path: Path) -> None:
    s3 = client(store, secret="not-the-secret")
    source = tmp_path / "f"
    source.write_bytes(b"1")
    from shipyard.errors import StorageError

    with pytest.raises(StorageError):
        s3.upload_file(source, "s3://direct/refused")
    assert s3._direct is not None and not s3._direct.enabled


def test_a_connection_the_store_closed_is_made_again(
        store: SeaweedStore, tmp_path: Path) -> None:
    direct = DirectS3(store.url, "us-east-1")
    credentials = (DEPOT_KEY[0], DEPOT_KEY[1], None)
    source = tmp_path / "f"
    source.write_bytes(b"abc")
    direct.put("direct", "again", source, credentials, max_bytes=100)
    [kept] = direct._idle
    kept.shutdown(2)  # as an idle connection the store dropped
    direct.get("direct", "again", tmp_path / "back", credentials, max_bytes=100)
    assert (tmp_path / "back").read_bytes() == b"abc"
    assert len(direct._idle) == 1 and direct._idle[0] is not kept
    # Requests at once each take a connection of their own; all are kept for later.
    workers = [threading.Thread(target=direct.get, args=(
        "direct", "again", tmp_path / f"t{n}", credentials, 100)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all((tmp_path / f"t{n}").read_bytes() == b"abc" for n in range(4))
    assert 1 <= len(direct._idle) <= 4
    direct.close()
    assert direct._idle == []
