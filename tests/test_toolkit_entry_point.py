"""Entry point types, commands, code download (local and a real S3 server), failure texts."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.contract.archives import make_tar_gz
from shipyard.contract.paths import OptMl
from shipyard.errors import DataSourceError, EntryPointError
from shipyard.toolkit.entry_point import (
    EntryPointType,
    build_command,
    entry_point_type,
    install_command,
    prepare_code_dir,
    resolve_program,
)
from shipyard.toolkit.failure import describe_user_failure, signal_note, write_failure
from shipyard.toolkit.process import StderrTail, shell_status

PY = sys.executable


@pytest.mark.parametrize(
    ("program", "setup_py", "kind"),
    [
        ("train.sh", True, EntryPointType.COMMAND),
        ("train.py", True, EntryPointType.PYTHON_PACKAGE),
        ("train.py", False, EntryPointType.PYTHON_PROGRAM),
        ("train", False, EntryPointType.COMMAND),
    ],
    ids=["sh-beats-setup.py", "setup.py", "script", "other"],
)
def test_entry_point_type(
    tmp_path: Path, program: str, setup_py: bool, kind: EntryPointType
) -> None:
    if setup_py:
        (tmp_path / "setup.py").write_text("")
    assert entry_point_type(tmp_path, program) is kind


def test_commands(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("")
    (tmp_path / "run me").write_text("")
    args = ["--msg", "hello world"]
    assert build_command(EntryPointType.PYTHON_PROGRAM, "train.py", args, tmp_path, PY) == [
        PY, "train.py", "--msg", "hello world"
    ]  # fmt: skip
    assert build_command(EntryPointType.PYTHON_PACKAGE, "train.py", args, tmp_path, PY) == [
        PY, "-m", "train", "--msg", "hello world"
    ]  # fmt: skip
    assert build_command(EntryPointType.COMMAND, "run me", args, tmp_path) == [
        "/bin/sh", "-c", "./run me --msg 'hello world'"
    ]  # fmt: skip
    with pytest.raises(EntryPointError, match="missing.py not found"):
        build_command(EntryPointType.PYTHON_PROGRAM, "missing.py", [], tmp_path)


def test_install_commands(tmp_path: Path) -> None:
    assert install_command(EntryPointType.PYTHON_PROGRAM, tmp_path, PY) is None
    assert install_command(EntryPointType.PYTHON_PACKAGE, tmp_path, PY) == [
        PY, "-m", "pip", "install", "."
    ]  # fmt: skip
    (tmp_path / "requirements.txt").write_text("numpy\n")
    assert install_command(EntryPointType.PYTHON_PROGRAM, tmp_path, PY) == [
        PY, "-m", "pip", "install", "-r", "requirements.txt"
    ]  # fmt: skip
    assert install_command(EntryPointType.COMMAND, tmp_path, PY) is None


def test_resolve_program() -> None:
    assert resolve_program({"SAGEMAKER_PROGRAM": "a.py"}, {"sagemaker_program": "b.py"}) == "a.py"
    assert resolve_program({}, {"sagemaker_program": "b.py"}) == "b.py"
    with pytest.raises(EntryPointError, match="SAGEMAKER_PROGRAM"):
        resolve_program({}, {})


def test_code_in_image_is_not_overwritten(tmp_path: Path) -> None:
    layout = OptMl.at(str(tmp_path / "ml"))
    code = Path(layout.code_dir)
    code.mkdir(parents=True)
    (code / "train.py").write_text("baked")
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text("submitted")
    tarball = make_tar_gz(source, tmp_path / "s.tar.gz")
    assert prepare_code_dir(layout, str(tarball), {}) == code
    assert (code / "train.py").read_text() == "baked"


def test_missing_submit_directory(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="does not exist"):
        prepare_code_dir(OptMl.at(str(tmp_path)), str(tmp_path / "nope.tar.gz"), {})


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_submit_directory_from_s3(tmp_path: Path, s3_endpoint: str) -> None:
    import boto3

    environ = {
        "S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text("print('from s3')\n")
    tarball = make_tar_gz(source, tmp_path / "sourcedir.tar.gz")
    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    s3.create_bucket(Bucket="code")
    s3.upload_file(str(tarball), "code", "job/source/sourcedir.tar.gz")
    layout = OptMl.at(str(tmp_path / "ml"))
    code = prepare_code_dir(layout, "s3://code/job/source/sourcedir.tar.gz", environ)
    assert (code / "train.py").read_text() == "print('from s3')\n"
    with pytest.raises(DataSourceError, match="cannot download"):
        prepare_code_dir(OptMl.at(str(tmp_path / "other")), "s3://code/missing.tar.gz", environ)


def test_stderr_tail_is_bounded_and_splits_carriage_returns() -> None:
    tail = StderrTail(max_lines=3, max_bytes=64)
    tail.feed(b"x" * 200 + b"\n")
    tail.feed(b"epoch 1\r epoch 2\r")
    tail.feed(b"\n\nTraceback\nValueError: bad")
    assert tail.lines() == [" epoch 2", "Traceback", "ValueError: bad"]


def test_exit_statuses_and_failure_text(tmp_path: Path) -> None:
    assert shell_status(-15) == 143 and shell_status(3) == 3
    assert signal_note(137) == "OutOfMemory: Process killed by SIGKILL (signal 9)"
    assert signal_note(143) == "Process killed by SIGTERM (signal 15)"
    assert signal_note(1) is None
    text = describe_user_failure(2, ["python", "train.py", "--x", "a b"], ["usage", "error: x"])
    assert text.splitlines()[:3] == [
        "ExecuteUserScriptError: the entry point exited with code 2",
        "ErrorMessage: error: x",
        "Command: python train.py --x 'a b'",
    ]
    failure = tmp_path / "output" / "failure"
    assert write_failure(failure, "first") is True
    assert write_failure(failure, "second") is False
    assert failure.read_text() == "first"
