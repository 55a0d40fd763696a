"""``shipyard models`` against a real server and real containers: a training job's model
registered (its lineage kept), model data registered with an image, listing, describing,
approval, and deploying only what was approved; bad input as one-line errors with the CLI's
exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.api.server import stop_server
from shipyard.settings import Settings
from tests.support.cli import run, shipyard_env
from tests.support.containers import containers
from tests.support.files import model_tarball

pytestmark = pytest.mark.docker

GROUP = "cli-models"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, docker_client: Any
        ) -> Iterator[dict[str, str]]:
    """One server for the module; endpoints left behind are deleted, then it is stopped."""
    values = shipyard_env(tmp_path_factory.mktemp("models") / "state",
                          endpoint_startup_timeout_seconds="30", stop_grace_seconds="5")
    yield values
    settings = Settings.load(environ=values)
    if settings.data_dir.exists():
        for name in json.loads(run(["endpoints", "ls", "--json"], values).stdout or "[]"):
            run(["endpoints", "delete", name["Name"], "--wait"], values)
    stop_server(settings)


@pytest.fixture(scope="module")
def registered(env: dict[str, str], images: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A training job's model (version 1) and a model tarball (version 2) in GROUP."""
    folder = tmp_path_factory.mktemp("models-data")
    (folder / "data").mkdir()
    (folder / "data" / "a.csv").write_text("1\n")
    result = run(["train", images["seed000"], "--name", "cli-models-job", "--quiet",
                  "--channel", f"training={folder / 'data'}", "--output",
                  str(folder / "out")], env)
    assert result.exit_code == 0, result.output
    job = json.loads(run(["jobs", "describe", "cli-models-job"], env).stdout)

    missing = run(["models", "register", "cli-models-job", "--group", GROUP], env)
    assert missing.exit_code == 3, missing.output
    assert f"no model package group named {GROUP} (--create-group creates it)" in (
        missing.stderr)
    first = run(["models", "register", "cli-models-job", "--group", GROUP, "--create-group",
                 "--image", images["plain-serve"], "--description", "from the job"], env)
    assert first.exit_code == 0, first.output
    assert "Registered version 1 of cli-models from training job cli-models-job: "\
           "PendingManualApproval" in first.stderr
    assert "models approve" in first.stderr

    tarball = model_tarball(folder, "v2", {"model.txt": "v2"})
    second = run(["models", "register", str(tarball), "--group", GROUP,
                  "--image", images["plain-serve"]], env)
    assert second.exit_code == 0, second.output
    return {"job": job, "v1": first.stdout.strip(), "v2": second.stdout.strip(),
            "tarball": tarball}


def test_register_keeps_the_training_job_and_lists(env: dict[str, str],
                                                   registered: dict[str, Any],
                                                   images: dict[str, str]) -> None:
    job, v1, v2 = registered["job"], registered["v1"], registered["v2"]
    assert v1.endswith(f":model-package/{GROUP}/1") and v2.endswith(f"/{GROUP}/2")

    record = json.loads(run(["models", "describe", v1, "--json"], env).stdout)
    assert record["SourceTrainingJobArn"] == job["TrainingJobArn"]
    assert record["MetadataProperties"]["GeneratedBy"] == job["TrainingJobArn"]
    assert record["InferenceSpecification"]["Containers"] == [{
        "Image": images["plain-serve"],
        "ModelDataUrl": job["ModelArtifacts"]["S3ModelArtifacts"]}]
    assert record["ModelPackageDescription"] == "from the job"
    text = run(["models", "describe", f"{GROUP}/1"], env).stdout
    lines = {k.strip(): v.strip() for k, _, v in
             (line.partition(":") for line in text.splitlines())}
    assert lines["Training job"].startswith("arn:") and lines["Training job"].endswith(
        "training-job/cli-models-job")
    assert lines["Approval"] == "PendingManualApproval"
    # A tarball's version names no job, and keeps the file as a file:// URI.
    record = json.loads(run(["models", "describe", v2, "--json"], env).stdout)
    assert "SourceTrainingJobArn" not in record
    assert record["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == (
        registered["tarball"].as_uri())

    groups = json.loads(run(["models", "ls", "--json"], env).stdout)
    assert [g["Name"] for g in groups] == [GROUP]
    assert run(["models", "ls"], env).stdout.splitlines()[1].split()[0] == GROUP
    listed = json.loads(run(["models", "ls", "--group", GROUP, "--json"], env).stdout)
    assert [(v["Version"], v["Status"]) for v in listed] == [
        (2, "PendingManualApproval"), (1, "PendingManualApproval")]
    assert json.loads(run(["models", "ls", "--status", "Approved", "--json"], env).stdout) == []
    group = run(["models", "describe", GROUP], env).stdout
    assert "Versions:    2" in group and v1 in group and v2 in group


def test_bad_input_exits_with_one_line(env: dict[str, str], registered: dict[str, Any],
                                       tmp_path: Path) -> None:
    cases = [
        (["models", "ls", "--group", "nobody"], 3, "no model package group named nobody"),
        (["models", "describe", "nobody"], 3, "does not exist."),
        (["models", "describe", f"{GROUP}/99"], 3, "does not exist."),
        (["models", "approve", f"{GROUP}/99", "--note", "x"], 3, "does not exist."),
        (["models", "register", "no-such-job", "--group", GROUP], 3,
         "no-such-job: no training job of that name, and no such file or folder"),
        (["models", "register", str(registered["tarball"]), "--group", GROUP], 2,
         "model data needs --image"),
        (["models", "register", str(registered["tarball"]), "--group", "bad_name!",
          "--create-group", "--image", "x"], 2, "validation error"),
        (["models", "reject", registered["v1"]], 2, "Missing option '--note'"),
        (["models", "deploy", registered["v2"], "--name", "cli-models-ep"], 2,
         "is PendingManualApproval, not Approved: approve it first with "
         f"`shipyard models approve {registered['v2']} --note TEXT`"),
    ]
    for args, code, message in cases:
        result = run(args, env)
        assert result.exit_code == code, (args, result.output)
        # One line says what is wrong (click adds its usage lines for its own checks).
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and message in errors[0], (args, result.stderr)
    # Nothing was written by the refused commands.
    listed = json.loads(run(["models", "ls", "--group", GROUP, "--json"], env).stdout)
    assert len(listed) == 2
    assert json.loads(run(["models", "ls", "--json"], env).stdout)[0]["Name"] == GROUP


def test_approve_reject_and_deploy_only_approved(env: dict[str, str],
                                                 registered: dict[str, Any],
                                                 docker_client: Any) -> None:
    v1, v2 = registered["v1"], registered["v2"]
    result = run(["models", "reject", v1, "--note", "too slow"], env)
    assert result.exit_code == 0, result.output
    assert "Version 1 of cli-models: PendingManualApproval -> Rejected" in result.stderr
    again = run(["models", "reject", v1, "--note", "again"], env)
    assert again.exit_code == 2 and "is already Rejected" in again.stderr
    denied = run(["models", "deploy", v1, "--name", "cli-models-ep"], env)
    assert denied.exit_code == 2 and "is Rejected, not Approved" in denied.stderr

    assert run(["models", "approve", v2, "--note", "good enough"], env).exit_code == 0
    record = json.loads(run(["models", "describe", v2, "--json"], env).stdout)
    assert (record["ModelApprovalStatus"], record["ApprovalDescription"]) == (
        "Approved", "good enough")
    assert [v["Version"] for v in json.loads(run(
        ["models", "ls", "--status", "Approved", "--json"], env).stdout)] == [2]

    result = run(["models", "deploy", v2, "--name", "cli-models-ep"], env)
    assert result.exit_code == 0, result.output
    assert "InService" in result.stderr and "Endpoint: cli-models-ep" in result.stdout
    reply = json.loads(run(["invoke", "cli-models-ep", "--body", "{}"], env).stdout)
    assert reply["model"] == "v2"
    model = json.loads(run(["endpoints", "describe", "cli-models-ep"], env).stdout)
    assert model["EndpointStatus"] == "InService"
    taken = run(["models", "deploy", v2, "--name", "cli-models-ep"], env)
    assert taken.exit_code == 2 and "already exists" in taken.stderr

    # The model and config were made for the endpoint: `endpoints delete` removes them too.
    result = run(["endpoints", "delete", "cli-models-ep", "--wait"], env)
    assert result.exit_code == 0, result.output
    assert "Deleted endpoint config cli-models-ep" in result.stderr
    assert "Deleted model cli-models-ep" in result.stderr
    assert containers(docker_client, "cli-models-ep") == []
