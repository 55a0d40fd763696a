"""Packing and delivering job outputs: real files, a real moto S3 server, real boto3."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from shipyard.contract.archives import safe_extract
from shipyard.control.artifacts import (
    merge_dirs,
    pack_and_upload,
    training_output_uris,
    upload_dir,
)
from shipyard.control.s3 import S3Client
from shipyard.errors import StorageError, ValidationError
from tests.support import s3server
from tests.support.files import read_tree, write_tree
from tests.support.s3server import S3Server

# Register the shared moto server fixtures in this module.
s3_server = s3server.s3_server
s3_bucket = s3server.s3_bucket
s3 = s3server.s3


MODEL = {"weights.bin": "w" * 100, "config/params.json": '{"k": 1}'}


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("s3://bucket/out", "s3://bucket/out/job-1/output/model.tar.gz"),
        ("s3://bucket/out/", "s3://bucket/out/job-1/output/model.tar.gz"),
        ("s3://bucket", "s3://bucket/job-1/output/model.tar.gz"),
        ("s3://bucket/", "s3://bucket/job-1/output/model.tar.gz"),
        ("file:///srv/out/", "file:///srv/out/job-1/output/model.tar.gz"),
        ("file:///", "file:///job-1/output/model.tar.gz"),
        ("/srv/out", "/srv/out/job-1/output/model.tar.gz"),
    ],
)
def test_training_output_uris(path: str, model: str) -> None:
    model_uri, output_uri = training_output_uris(path, "job-1")
    assert model_uri == model
    assert output_uri == model.replace("model.tar.gz", "output.tar.gz")


def test_training_output_uris_rejects_empty_and_foreign_schemes() -> None:
    with pytest.raises(ValidationError):
        training_output_uris("", "job")
    with pytest.raises(ValidationError, match="scheme"):
        training_output_uris("gs://bucket/x", "job")


def test_pack_and_upload_to_a_file_uri(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "model", MODEL)
    model_uri, _ = training_output_uris((tmp_path / "out").as_uri(), "job-1")

    assert pack_and_upload(source, model_uri) == model_uri

    archive = tmp_path / "out" / "job-1" / "output" / "model.tar.gz"
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["config", "config/params.json", "weights.bin"]
    safe_extract(archive, tmp_path / "x")
    assert read_tree(tmp_path / "x", symlinks=False) == {k: v.encode() for k, v in MODEL.items()}
    assert sorted(p.name for p in archive.parent.iterdir()) == ["model.tar.gz"]


def test_pack_and_upload_to_s3(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, s3: S3Client
) -> None:
    source = write_tree(tmp_path / "model", MODEL)
    model_uri, _ = training_output_uris(f"s3://{s3_bucket}/results/", "job-2")

    pack_and_upload(source, model_uri, s3)

    assert s3.exists(model_uri)
    fetched = tmp_path / "fetched.tar.gz"
    s3_server.boto().download_file(s3_bucket, "results/job-2/output/model.tar.gz", str(fetched))
    safe_extract(fetched, tmp_path / "x")
    assert read_tree(tmp_path / "x", symlinks=False) == {k: v.encode() for k, v in MODEL.items()}


def test_pack_an_empty_or_missing_folder_gives_an_empty_archive(tmp_path: Path) -> None:
    dest = tmp_path / "output.tar.gz"
    pack_and_upload(tmp_path / "never-written", str(dest))
    with tarfile.open(dest) as tar:
        assert tar.getnames() == []


def test_uncompressed_model_is_delivered_file_by_file(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "model", MODEL)
    dest = tmp_path / "out" / "model"
    pack_and_upload(source, dest.as_uri(), compress=False)
    assert read_tree(dest, symlinks=False) == {k: v.encode() for k, v in MODEL.items()}


def test_unwritable_local_destination_is_a_storage_error_leaving_nothing(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "model", MODEL)
    blocker = tmp_path / "out"
    blocker.write_text("a file where a folder should be")

    with pytest.raises(StorageError, match="cannot write"):
        pack_and_upload(source, str(blocker / "job" / "model.tar.gz"))
    with pytest.raises(StorageError, match="cannot write"):
        upload_dir(source, (blocker / "processed").as_uri())

    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]
    assert blocker.read_text() == "a file where a folder should be"


def test_missing_bucket_on_upload_is_a_storage_error(tmp_path: Path, s3: S3Client) -> None:
    source = write_tree(tmp_path / "model", MODEL)
    with pytest.raises(StorageError, match="s3://no-such-bucket-y2/m.tar.gz: no such bucket"):
        pack_and_upload(source, "s3://no-such-bucket-y2/m.tar.gz", s3)


def test_failed_local_folder_delivery_leaves_no_partial_files(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "processed", {"a.csv": "a", "sub/b.csv": "b"})
    dest = tmp_path / "dest"
    write_tree(dest, {"sub": "a file where the output has a folder"})

    with pytest.raises(StorageError):
        upload_dir(source, str(dest))

    leftovers = [p.name for p in tmp_path.iterdir() if "partial" in p.name]
    assert leftovers == []
    assert read_tree(dest, symlinks=False) == {"sub": b"a file where the output has a folder"}


def test_upload_dir_to_a_local_folder_skips_symlinks(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "processed", {"a.csv": "a", "deep/b.csv": "b"})
    outside = write_tree(tmp_path / "outside", {"secret.txt": "s"})
    (source / "link.txt").symlink_to(outside / "secret.txt")
    (source / "linkdir").symlink_to(outside)
    dest = tmp_path / "dest"

    uris = upload_dir(source, dest.as_uri() + "/")

    assert read_tree(dest, symlinks=False) == {"a.csv": b"a", "deep/b.csv": b"b"}
    assert uris == [f"{dest.as_uri()}/a.csv", f"{dest.as_uri()}/deep/b.csv"]
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_upload_dir_to_s3_uploads_every_file_under_the_prefix(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, s3: S3Client
) -> None:
    files = {f"batch-{i % 5}/row-{i:02d}.csv": f"{i}\n" for i in range(50)}
    source = write_tree(tmp_path / "processed", files)
    (source / "link.csv").symlink_to(source / "batch-0" / "row-00.csv")

    uris = upload_dir(source, f"s3://{s3_bucket}/processing/out", s3)

    assert uris == sorted(f"s3://{s3_bucket}/processing/out/{rel}" for rel in files)
    listed = {obj.key for obj in s3.list_objects(f"s3://{s3_bucket}/processing/out/")}
    assert listed == {f"processing/out/{rel}" for rel in files}
    body = s3_server.boto().get_object(Bucket=s3_bucket, Key="processing/out/batch-3/row-13.csv")
    assert body["Body"].read() == b"13\n"


def test_upload_dir_of_a_missing_folder_uploads_nothing(tmp_path: Path) -> None:
    assert upload_dir(tmp_path / "absent", str(tmp_path / "dest")) == []
    assert not (tmp_path / "dest").exists()


def test_merge_keeps_the_first_hosts_file_and_reports_clashes(tmp_path: Path) -> None:
    host1 = write_tree(tmp_path / "algo-1", {"model.pt": "one", "shared/cfg": "1", "only1": "x"})
    host2 = write_tree(
        tmp_path / "algo-2",
        {"model.pt": "two", "shared/cfg": "2", "only2": "y", "only1/inner": "dir-vs-file"},
    )
    (host2 / "link").symlink_to("only2")
    dest = tmp_path / "merged"

    clashes = merge_dirs([host1, host2, tmp_path / "algo-3-missing"], dest)

    assert sorted(clashes) == ["model.pt", "only1", "shared/cfg"]
    assert read_tree(dest, symlinks=False) == {
        "model.pt": b"one",
        "shared/cfg": b"1",
        "only1": b"x",
        "only2": b"y",
    }
    assert (dest / "link").is_symlink() and (dest / "link").read_text() == "y"


def test_merge_without_clashes_is_the_union(tmp_path: Path) -> None:
    host1 = write_tree(tmp_path / "algo-1", {"rank-0/w.bin": "0"})
    host2 = write_tree(tmp_path / "algo-2", {"rank-1/w.bin": "1"})
    assert merge_dirs([host1, host2], tmp_path / "merged") == []
    assert read_tree(tmp_path / "merged", symlinks=False) == {"rank-0/w.bin": b"0", "rank-1/w.bin": b"1"}
