"""``file://`` locations are confined to the ``file_roots`` folders, never the data directory
or system folders: checked at create time (nothing written) and again where they are used.

Most cases run the control plane over the FakeRuntime; the API's answer goes through real
boto3 against a real server, and one job in a real container shows a user's own input folder
is read-only.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from shipyard.control import ControlPlane
from shipyard.control.confinement import FileRoots
from shipyard.errors import ValidationError
from shipyard.runtimes import DockerRuntime, FakeBehaviour, FakeRuntime
from shipyard.settings import Settings
from tests.support import jobs
from tests.support.api import Api, serving
from tests.support.files import tar_files
from tests.support.jobs import FAKE_IMAGE as IMAGE
from tests.support.jobs import ROLE, channel
from tests.support.planes import fake_plane


def training_request(name: str, tmp: Path, **extra: Any) -> dict[str, Any]:
    return jobs.training_request(name, tmp, instance_type="local", max_runtime_s=600, **extra)


def processing_request(name: str, source: str, dest: str) -> dict[str, Any]:
    return {
        "ProcessingJobName": name,
        "RoleArn": ROLE,
        "AppSpecification": {"ImageUri": IMAGE},
        "ProcessingInputs": [{"InputName": "in", "S3Input": {
            "S3Uri": source, "LocalPath": "/opt/ml/processing/input",
            "S3DataType": "S3Prefix"}}],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "out", "S3Output": {
            "S3Uri": dest, "LocalPath": "/opt/ml/processing/output",
            "S3UploadMode": "EndOfJob"}}]},
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "local",
                                                  "InstanceCount": 1, "VolumeSizeInGB": 1}},
    }


def make_plane(tmp: Path, handler: Any = None, **settings: Any) -> ControlPlane:
    return fake_plane(tmp, handler, **settings)[0]


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = make_plane(tmp_path)
    yield cp
    cp.close()


def state_files(cp: ControlPlane) -> set[Path]:
    return set(cp.settings.data_dir.rglob("*"))


# -- the rule itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("file:///etc", "system folder"),
        ("file:///etc/passwd", "system folder"),
        ("file:///", "root folder"),
        ("/", "root folder"),
        ("file:///proc/self", "system folder"),
        ("file:///sys", "system folder"),
        ("file:///dev/shm", "system folder"),
        ("file:///boot", "system folder"),
        ("{tmp}/state", "inside the Shipyard data directory"),
        ("file://{tmp}/state/credentials.json", "inside the Shipyard data directory"),
        ("{tmp}/state/jobs/x", "inside the Shipyard data directory"),
        ("{tmp}", "contains the Shipyard data directory"),
        ("file://{tmp}/data/../state", "inside the Shipyard data directory"),
        ("file://{tmp}/data/../../../../../../etc/shadow", "system folder"),
        ("{tmp}/link-to-etc", "system folder"),
        ("{tmp}/link-to-etc/ssh", "system folder"),
        ("{tmp}/link-to-state", "inside the Shipyard data directory"),
        ("file:///usr/share", "outside the allowed folders"),
    ],
)
def test_refused_locations(tmp_path: Path, location: str, reason: str) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "link-to-etc").symlink_to("/etc")
    (tmp_path / "link-to-state").symlink_to(tmp_path / "state")
    roots = FileRoots.allowing([tmp_path], data_dir=tmp_path / "state")
    with pytest.raises(ValidationError, match=reason) as caught:
        roots.path(location.format(tmp=tmp_path), "channel")
    assert "file_roots" in caught.value.message
    assert "SHIPYARD_FILE_ROOTS" in caught.value.message


@pytest.mark.parametrize("location", [
    "{tmp}/data", "file://{tmp}/data/part-0.csv", "file://{tmp}/data/not-yet/made",
    "{tmp}/data/sub/../other", "file://{tmp}/state/output", "{tmp}/state/output/job/model.tar.gz",
])
def test_allowed_locations_resolve_to_real_paths(tmp_path: Path, location: str) -> None:
    (tmp_path / "data").mkdir()
    roots = FileRoots.allowing([tmp_path], data_dir=tmp_path / "state")
    path = roots.path(location.format(tmp=tmp_path))
    assert path == Path(os.path.realpath(path)) and path.is_absolute()


def test_a_symlink_inside_a_root_resolves_to_its_target(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    roots = FileRoots.allowing([tmp_path / "alias"], data_dir=tmp_path / "state")
    assert roots.path(str(tmp_path / "alias" / "x")) == (tmp_path / "real" / "x").resolve()


def test_default_roots_are_home_and_the_temporary_folder(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": str(tmp_path / "state")}, environ={})
    assert settings.file_roots == (Path.home(), Path(tempfile.gettempdir()))
    roots = FileRoots.of(settings)
    assert roots.path((tmp_path / "data").as_uri()) == (tmp_path / "data").resolve()


def test_home_itself_is_refused_when_it_holds_the_data_dir(tmp_path: Path) -> None:
    home = tmp_path / "home"
    roots = FileRoots.allowing([home], data_dir=home / ".shipyard")
    with pytest.raises(ValidationError, match="contains the Shipyard data directory"):
        roots.path(home.as_uri())
    assert roots.path((home / "data").as_uri()) == (home / "data").resolve()


def test_no_roots_refuses_every_local_location_but_the_output_folder(tmp_path: Path) -> None:
    roots = FileRoots.allowing([], data_dir=tmp_path / "state")
    with pytest.raises(ValidationError, match=r"outside the allowed folders \(none\)"):
        roots.path(str(tmp_path / "data"))
    assert roots.path(str(tmp_path / "state" / "output" / "j"))


# -- at create time, before anything is written -----------------------------------------


def test_training_channels_are_refused_before_anything_is_written(tmp_path: Path,
                                                                  plane: ControlPlane) -> None:
    before = state_files(plane)
    for index, uri in enumerate(["file:///etc", "file:///", "file:///proc/self",
                                 plane.settings.data_dir.as_uri(),
                                 (plane.settings.data_dir / "state.db").as_uri(),
                                 tmp_path.as_uri()]):
        with pytest.raises(ValidationError, match="file_roots"):
            plane.create("training", training_request(
                f"job-{index}", tmp_path, InputDataConfig=[channel(uri)]))
    assert plane.list_resources("training") == []
    assert state_files(plane) == before


@pytest.mark.parametrize("member", ["output", "checkpoint", "code", "manifest"])
def test_every_training_location_is_checked(tmp_path: Path, plane: ControlPlane,
                                            member: str) -> None:
    state = plane.settings.data_dir
    request = training_request("job-x", tmp_path)
    if member == "output":
        request["OutputDataConfig"] = {"S3OutputPath": f"file://{tmp_path}/data/../state"}
    elif member == "checkpoint":
        request["CheckpointConfig"] = {"S3Uri": state.as_uri()}
    elif member == "code":
        request["HyperParameters"] = {"sagemaker_submit_directory": json.dumps(
            (state / "credentials.json").as_uri())}
    else:
        request["InputDataConfig"] = [channel("file:///etc/manifest", data_type="ManifestFile")]
    with pytest.raises(ValidationError, match="file_roots"):
        plane.create("training", request)
    assert plane.list_resources("training") == []


def test_processing_output_into_the_data_dir_is_refused(tmp_path: Path,
                                                        plane: ControlPlane) -> None:
    (tmp_path / "in").mkdir()
    state = plane.settings.data_dir
    with pytest.raises(ValidationError, match="inside the Shipyard data directory"):
        plane.create("processing", processing_request(
            "proc-x", (tmp_path / "in").as_uri(), str(state)))
    with pytest.raises(ValidationError, match="system folder"):
        plane.create("processing", processing_request(
            "proc-y", "file:///etc", (tmp_path / "out").as_uri()))
    assert plane.list_resources("processing") == []
    assert not (state / "credentials.json").exists()


def test_transform_locations_are_refused(tmp_path: Path, plane: ControlPlane) -> None:
    (tmp_path / "in").mkdir()

    def transform(source: str, dest: str) -> dict[str, Any]:
        return {"TransformJobName": "tj", "ModelName": "m",
                "TransformInput": {"DataSource": {"S3DataSource": {
                    "S3DataType": "S3Prefix", "S3Uri": source}}},
                "TransformOutput": {"S3OutputPath": dest},
                "TransformResources": {"InstanceType": "local", "InstanceCount": 1}}

    with pytest.raises(ValidationError, match="TransformOutput.S3OutputPath"):
        plane.create("transform", transform((tmp_path / "in").as_uri(),
                                             plane.settings.data_dir.as_uri()))
    with pytest.raises(ValidationError, match="TransformInput"):
        plane.create("transform", transform("file:///proc/self/environ",
                                             (tmp_path / "out").as_uri()))


def test_model_data_in_the_data_dir_is_refused(tmp_path: Path, plane: ControlPlane) -> None:
    url = (plane.settings.data_dir / "credentials.json").as_uri()
    with pytest.raises(ValidationError, match="ModelDataUrl"):
        plane.create("model", {"ModelName": "m", "PrimaryContainer": {
            "Image": IMAGE, "ModelDataUrl": url}})
    with pytest.raises(ValidationError, match="file_roots"):
        plane.create("model", {"ModelName": "m", "Containers": [{
            "Image": IMAGE, "ModelDataUrl": "/etc"}]})
    plane.create("model", {"ModelName": "m", "PrimaryContainer": {
        "Image": IMAGE, "ModelDataUrl": (tmp_path / "model").as_uri()}})


def test_outside_the_roots_is_refused_and_an_extra_root_is_accepted(tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    cp = make_plane(tmp_path, file_roots=[str(extra)])
    try:
        with pytest.raises(ValidationError, match="outside the allowed folders") as caught:
            cp.create("training", training_request("job-out", tmp_path))
        assert "file_roots" in caught.value.message
        inside = extra / "data"
        inside.mkdir(parents=True)
        (inside / "a.csv").write_text("1\n")
        cp.create("training", training_request(
            "job-in", tmp_path, InputDataConfig=[channel(inside.as_uri())],
            OutputDataConfig={"S3OutputPath": (extra / "out").as_uri()}))
        assert cp.wait("training", "job-in", timeout=10)["TrainingJobStatus"] == "Completed"
        assert (extra / "out" / "job-in" / "output" / "model.tar.gz").is_file()
    finally:
        cp.close()


def test_default_roots_run_a_tmp_path_job_and_the_cli_default_output(
        tmp_path: Path, plane: ControlPlane) -> None:
    # `shipyard train` without --output writes below <data_dir>/output.
    output = (plane.settings.data_dir / "output").as_uri()
    plane.create("training", training_request(
        "job-ok", tmp_path, OutputDataConfig={"S3OutputPath": output}))
    record = plane.wait("training", "job-ok", timeout=10)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    assert (plane.settings.data_dir / "output" / "job-ok" / "output" / "model.tar.gz").is_file()


# -- again where it is used ---------------------------------------------------------------


def test_a_manifest_entry_pointing_at_etc_fails_the_job(tmp_path: Path,
                                                        plane: ControlPlane) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([{"prefix": "/etc/"}, "hostname"]))
    plane.create("training", training_request(
        "job-manifest", tmp_path,
        InputDataConfig=[channel(manifest.as_uri(), data_type="ManifestFile")]))
    record = plane.wait("training", "job-manifest", timeout=10)
    assert record["TrainingJobStatus"] == "Failed"
    assert "system folder" in record["FailureReason"]
    assert "file_roots" in record["FailureReason"]


def test_an_output_folder_made_a_link_meanwhile_is_not_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    state = tmp_path / "state"

    def swap(spec: Any) -> FakeBehaviour:
        # While the job runs, its output folder becomes a link into the data directory.
        out.rmdir()
        out.symlink_to(state)
        return FakeBehaviour()

    cp = make_plane(tmp_path, swap)
    try:
        cp.create("training", training_request("job-swap", tmp_path))
        record = cp.wait("training", "job-swap", timeout=10)
    finally:
        cp.close()
    assert record["TrainingJobStatus"] == "Failed"
    assert "inside the Shipyard data directory" in record["FailureReason"]
    assert not (state / "job-swap").exists()


# -- through the API: SageMaker's ValidationException ------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    settings = Settings.load({"data_dir": str(tmp_path / "state"), "api_port": 0},
                             environ={})
    with serving(settings, ControlPlane(settings, FakeRuntime(images=[IMAGE]))) as api:
        yield api


def test_api_answers_validation_exception(tmp_path: Path, api: Api) -> None:
    credentials = tmp_path / "state" / "credentials.json"
    assert credentials.is_file()
    secret = credentials.read_bytes()
    cases = [
        {"InputDataConfig": [channel("file:///etc")]},
        {"InputDataConfig": [channel((tmp_path / "state").as_uri())]},
        {"OutputDataConfig": {"S3OutputPath": (tmp_path / "state").as_uri()}},
    ]
    for index, change in enumerate(cases):
        with pytest.raises(ClientError) as caught:
            api.sm.create_training_job(**training_request(f"api-{index}", tmp_path, **change))
        error = caught.value.response["Error"]
        assert error["Code"] == "ValidationException"
        assert "file_roots" in error["Message"]
    with pytest.raises(ClientError) as caught:
        api.sm.create_model(ModelName="m", ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": IMAGE, "ModelDataUrl": credentials.as_uri()})
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert api.sm.list_training_jobs()["TrainingJobSummaries"] == []
    assert credentials.read_bytes() == secret


# -- in a real container: the user's own folder is read-only --------------------------------------------


@pytest.mark.docker
def test_input_channel_is_mounted_read_only(tmp_path: Path, docker_client: Any,
                                            base_image: str,
                                            scope_labels: dict[str, str]) -> None:
    script = ("if touch /opt/ml/input/data/training/written 2>/opt/ml/model/error; "
              "then echo writable; else echo read-only; fi > /opt/ml/model/result")
    settings = Settings.load({"data_dir": str(tmp_path / "state"), "stop_grace_seconds": 3},
                             environ={})
    cp = ControlPlane(settings, DockerRuntime(docker_client, labels=scope_labels))
    try:
        request = training_request("ro-input", tmp_path)
        request["AlgorithmSpecification"] = {
            "TrainingImage": base_image, "TrainingInputMode": "File",
            "ContainerEntrypoint": ["sh", "-c", script]}
        cp.create("training", request)
        record = cp.wait("training", "ro-input", timeout=120)
    finally:
        cp.close()
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    files = {name: data.decode() for name, data in
             tar_files(tmp_path / "out" / "ro-input" / "output" / "model.tar.gz").items()}
    assert files["result"].strip() == "read-only"
    assert "Read-only file system" in files["error"]
    assert not (tmp_path / "data" / "written").exists()
