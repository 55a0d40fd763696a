"""Bad input a key holder can send, and the server's own files and lifecycle (issue 10's
smaller items), through real boto3 against a real server with real containers."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from shipyard.api.server import read_info, stop_server
from shipyard.control.artifacts import merge_dirs
from shipyard.errors import ValidationError
from shipyard.runtimes.docker import check_reference
from shipyard.settings import Settings
from tests.support import api as support_api
from tests.support.api import Api, training, wait_done
from tests.support.jobs import ROLE

api = support_api.docker_api  # a server over real containers, started once for this module

BAD_IMAGES = ["x;id", "UPPER/case:1", "$(id)", "a b", "img:", "-lead", "a//b"]


@pytest.mark.parametrize("image", BAD_IMAGES)
def test_check_reference_refuses(image: str) -> None:
    with pytest.raises(ValidationError, match="not a valid image reference"):
        check_reference(image)


@pytest.mark.parametrize("image", [
    "a", "shipyard/base:bookworm-py311", "localhost:5000/team/img:1", "localhost/x",
    "registry.example.com/a_b/c-d:v1.0", "127.0.0.1:5000/a:b", "x@sha256:" + "a" * 64,
    "a" * 64])
def test_check_reference_accepts(image: str) -> None:
    check_reference(image)


@pytest.mark.docker
@pytest.mark.parametrize("image", ["x;id", "UPPER/case:1", "$(id)"])
def test_an_invalid_image_name_is_a_validation_exception(api: Api, tmp_path: Path,
                                                         image: str) -> None:
    with pytest.raises(ClientError) as caught:
        api.sm.create_training_job(**training("bad-image", image, tmp_path))
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "not a valid image reference" in caught.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as caught:
        api.sm.create_model(ModelName="bad-image-model", ExecutionRoleArn=ROLE,
                            PrimaryContainer={"Image": image})
    assert caught.value.response["Error"]["Code"] == "ValidationException"


@pytest.mark.docker
def test_an_environment_value_with_nul_is_refused_up_front(
        api: Api, images: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ClientError) as caught:
        api.sm.create_training_job(**training("nul-env", images["behaviours"], tmp_path,
                                              Environment={"A": "x\x00y"}))
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "NUL" in caught.value.response["Error"]["Message"]
    with pytest.raises(ClientError):
        api.sm.describe_training_job(TrainingJobName="nul-env")


@pytest.mark.docker
def test_resource_config_is_required_and_local_is_accepted_when_named(
        api: Api, images: dict[str, str], tmp_path: Path) -> None:
    request = training("no-resources", images["behaviours"], tmp_path)
    del request["ResourceConfig"]
    status, body = api.post_target("SageMaker.CreateTrainingJob", json.dumps(request).encode())
    assert status == 400 and body["__type"].endswith("ValidationException"), body
    assert "resourceConfig" in body["message"]
    request["ResourceConfig"] = {"InstanceCount": 1, "VolumeSizeInGB": 1}
    status, body = api.post_target("SageMaker.CreateTrainingJob", json.dumps(request).encode())
    assert status == 400 and "instanceType" in body["message"], body
    request["ResourceConfig"]["InstanceType"] = "local"
    api.sm.create_training_job(**request)
    assert wait_done(api, "no-resources")["TrainingJobStatus"] == "Completed"


@pytest.mark.docker
def test_the_data_directory_is_the_owners_alone(api: Api, images: dict[str, str],
                                                tmp_path: Path) -> None:
    api.sm.create_training_job(**training("private-log", images["behaviours"], tmp_path))
    wait_done(api, "private-log")
    data_dir = api.server.settings.data_dir
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("state.db", "credentials.json"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    logs = list((data_dir / "logs").rglob("*.log"))
    assert logs and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in logs)


def test_merging_again_after_a_resume_reports_no_clash(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    host = tmp_path / "algo-1"
    (host / "sub").mkdir(parents=True)
    (host / "model.bin").write_bytes(b"weights")
    (host / "sub" / "meta.json").write_text("{}")
    merged = tmp_path / "merged"
    assert merge_dirs([host], merged) == []
    with caplog.at_level(logging.WARNING):
        # What a supervisor resumed mid-packaging does: merge into the same folder again.
        assert merge_dirs([host], merged) == []
    assert "same path" not in caplog.text
    assert (merged / "sub" / "meta.json").read_text() == "{}"


def test_server_stop_stops_a_server_started_in_a_terminal(tmp_path: Path) -> None:
    env = {**os.environ, "SHIPYARD_DATA_DIR": str(tmp_path / "state"),
           "SHIPYARD_API_PORT": "0", "SHIPYARD_RUNTIME": "process"}
    settings = Settings.load(environ=env)
    proc = subprocess.Popen([sys.executable, "-m", "shipyard.cli", "server"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while (info := read_info(settings)) is None or info.pid != proc.pid:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        stopped = subprocess.run([sys.executable, "-m", "shipyard.cli", "server", "stop"],
                                 env=env, capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert "server stopped" in stopped.stderr
        assert proc.wait(timeout=10) == 0
        assert read_info(settings) is None
        assert stop_server(settings) is None  # and now nothing runs
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
