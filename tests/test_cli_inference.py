"""``shipyard deploy | invoke | endpoints | transform`` against a real server (started in the
background by the CLI, as for a user) and real containers of the ``plain-serve`` image."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.api.server import stop_server
from shipyard.client import Client
from shipyard.settings import Settings
from tests.support.cli import interrupt, run, shipyard_env
from tests.support.containers import containers
from tests.support.files import model_tarball

pytestmark = pytest.mark.docker

@pytest.fixture
def env(tmp_path: Path, docker_client: Any) -> Iterator[dict[str, str]]:
    """Settings for the CLI; endpoints left by a test are deleted, then the server stopped."""
    values = shipyard_env(tmp_path / "state", endpoint_startup_timeout_seconds="30",
                          invoke_timeout_seconds="5")
    yield values
    settings = Settings.load(environ=values)
    if settings.data_dir.exists():
        for name in json.loads(run(["endpoints", "ls", "--json"], values).stdout or "[]"):
            run(["endpoints", "delete", name["Name"], "--wait"], values)
    stop_server(settings)


def client_of(env: dict[str, str]) -> Client:
    return Client.for_settings(Settings.load(environ=env))


def test_deploy_invoke_update_ls_describe_delete(env: dict[str, str], images: dict[str, str],
                                                 tmp_path: Path, docker_client: Any) -> None:
    v1 = model_tarball(tmp_path, "v1", {"model.txt": "v1"})
    result = run(["deploy", images["plain-serve"], "--name", "cli-ep", "--model-data", str(v1),
                  "--instance-count", "2"], env)
    assert result.exit_code == 0, result.output
    assert "InService" in result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert lines["Endpoint"].strip() == "cli-ep"
    assert lines["URL"].strip() == f"{client_of(env).url}/endpoints/cli-ep/invocations"
    assert "invoke cli-ep --file payload.json" in lines["Invoke"]
    assert len(containers(docker_client, "cli-ep")) == 2

    result = run(["invoke", "cli-ep", "--body", "hello", "--content-type", "text/plain",
                  "--accept", "application/json", "--custom-attributes", "trace=1", "-v"], env)
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout_bytes)
    assert (reply["model"], reply["body"], reply["content_type"], reply["accept"],
            reply["attributes"]) == ("v1", "hello", "text/plain", "application/json", "trace=1")
    assert "Invoked variant: AllTraffic" in result.stderr
    assert "Custom attributes: seen=1" in result.stderr

    # The payload from a file (its type from the suffix), from stdin, and streamed back.
    (tmp_path / "rows.csv").write_text("1,2\n3,4\n")
    reply = json.loads(run(["invoke", "cli-ep", "--file", str(tmp_path / "rows.csv")],
                           env).stdout_bytes)
    assert (reply["body"], reply["content_type"]) == ("1,2\n3,4\n", "text/csv")
    reply = json.loads(run(["invoke", "cli-ep", "--file", "-"], env,
                           stdin=b"\x00\xffraw").stdout_bytes)
    assert reply["body"] == "\x00\xffraw" and reply["content_type"] == "application/json"
    result = run(["invoke", "cli-ep", "--body", "big:100000", "--stream"], env)
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"x" * 100000

    # The model's own error: its message on stderr, exit code 1.
    result = run(["invoke", "cli-ep", "--body", "fail"], env)
    assert result.exit_code == 1
    assert "bad input: fail" in result.stderr and result.stdout == ""

    table = run(["endpoints", "ls"], env).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "CREATED", "MODIFIED"]
    assert table[1].split()[:2] == ["cli-ep", "InService"]
    described = json.loads(run(["endpoints", "describe", "cli-ep"], env).stdout)
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == (
        "InService", "cli-ep")

    # Deploying to an existing name needs --update; --update is blue/green, then the old
    # model and config (made by deploy) are removed.
    result = run(["deploy", images["plain-serve"], "--name", "cli-ep"], env)
    assert result.exit_code == 2 and "--update" in result.output
    v2 = model_tarball(tmp_path, "v2", {"model.txt": "v2"})
    result = run(["deploy", images["plain-serve"], "--name", "cli-ep", "--model-data", str(v2),
                  "--update"], env)
    assert result.exit_code == 0, result.output
    assert "Updating" in result.stderr
    assert json.loads(run(["invoke", "cli-ep", "--body", "{}"], env).stdout)["model"] == "v2"
    client = client_of(env)
    configs = [c["EndpointConfigName"] for c in client.call("ListEndpointConfigs")[
        "EndpointConfigs"]]
    models = [m["ModelName"] for m in client.call("ListModels")["Models"]]
    assert len(configs) == 1 and configs[0].startswith("cli-ep-") and models == configs

    result = run(["endpoints", "delete", "cli-ep", "--wait"], env)
    assert result.exit_code == 0, result.output
    assert f"Deleted endpoint config {configs[0]}" in result.stderr
    assert f"Deleted model {configs[0]}" in result.stderr
    assert run(["endpoints", "describe", "cli-ep"], env).exit_code == 3
    assert client.call("ListEndpointConfigs")["EndpointConfigs"] == []
    assert client.call("ListModels")["Models"] == []
    assert containers(docker_client, "cli-ep") == []


def test_failed_deploy_exits_1_with_the_reason(env: dict[str, str],
                                                images: dict[str, str]) -> None:
    result = run(["deploy", images["plain-serve"], "--name", "cli-bad", "--env", "MODE=exit"],
                 env)
    assert result.exit_code == 1, result.output
    assert "Endpoint cli-bad: Failed" in result.stderr
    assert "FailureReason:" in result.stderr and "MODE=exit" in result.stderr
    assert "endpoints delete cli-bad" in result.stderr
    assert json.loads(run(["endpoints", "describe", "cli-bad"], env).stdout)[
        "EndpointStatus"] == "Failed"
    assert run(["endpoints", "delete", "cli-bad", "--wait"], env).exit_code == 0
    assert client_of(env).call("ListModels")["Models"] == []


def test_no_wait_and_ctrl_c_leave_the_deployment_going(env: dict[str, str],
                                                       images: dict[str, str]) -> None:
    result = run(["deploy", images["plain-serve"], "--name", "cli-nowait", "--no-wait"], env)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(":endpoint/cli-nowait")
    # never-ready: the deployment waits for /ping until Ctrl-C detaches from it.
    status, rest = interrupt(["deploy", images["plain-serve"], "--name", "cli-detach",
                              "--env", "MODE=never-ready"], env, once="Creating")
    assert status == 130
    assert "Detached: endpoint cli-detach keeps deploying." in rest
    assert json.loads(run(["endpoints", "describe", "cli-detach"], env).stdout)[
        "EndpointStatus"] == "Creating"


def test_failed_update_keeps_the_old_fleet(env: dict[str, str], images: dict[str, str],
                                           tmp_path: Path) -> None:
    v1 = model_tarball(tmp_path, "v1", {"model.txt": "v1"})
    assert run(["deploy", images["plain-serve"], "--name", "cli-up", "--model-data", str(v1)],
               env).exit_code == 0
    result = run(["deploy", images["plain-serve"], "--name", "cli-up", "--env", "MODE=exit",
                  "--update"], env)
    assert result.exit_code == 1, result.output
    assert "update failed" in result.stderr and "MODE=exit" in result.stderr
    assert "keeps serving endpoint config cli-up" in result.stderr
    assert json.loads(run(["invoke", "cli-up", "--body", "{}"], env).stdout)["model"] == "v1"
    # The new, unused model and config are gone; the serving ones stay.
    client = client_of(env)
    assert [m["ModelName"] for m in client.call("ListModels")["Models"]] == ["cli-up"]


def test_missing_endpoints_and_bad_input(env: dict[str, str], images: dict[str, str],
                                         tmp_path: Path) -> None:
    result = run(["invoke", "nobody", "--body", "x"], env)
    assert result.exit_code == 3, result.output
    assert "Endpoint nobody of account" in result.stderr
    assert run(["invoke", "nobody", "--body", "x", "--stream"], env).exit_code == 3
    assert run(["endpoints", "describe", "nobody"], env).exit_code == 3
    assert run(["endpoints", "delete", "nobody"], env).exit_code == 3
    result = run(["deploy", images["plain-serve"], "--name", "nobody", "--update"], env)
    assert result.exit_code == 3 and "no endpoint named nobody" in result.output
    result = run(["deploy", images["plain-serve"], "--model-data", str(tmp_path / "none")], env)
    assert result.exit_code == 2 and "no such file" in result.output
    result = run(["deploy", images["plain-serve"], "--name", "bad_name"], env)
    assert result.exit_code == 2 and "regular expression" in result.output
    result = run(["deploy", images["plain-serve"], "--instance-type", "ml.nope"], env)
    assert result.exit_code == 2, result.output
    # A refused config leaves no model behind.
    assert client_of(env).call("ListModels")["Models"] == []
    assert run(["invoke", "x", "--body", "a", "--file", "-"], env).exit_code == 2
    assert run(["invoke", "x", "--stream", "--target-model", "m"], env).exit_code == 2



def test_transform_of_a_small_csv(env: dict[str, str], images: dict[str, str],
                                  tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rows.csv").write_text("1,2\n3,4\n5,6\n")
    model = model_tarball(tmp_path, "m", {"model.txt": "v1"})
    # An image: a model named after the job is made for it; one request per line.
    result = run(["transform", images["plain-serve"], "--name", "cli-tj", "--model-data",
                  str(model), "--input", str(tmp_path / "in"), "--output",
                  str(tmp_path / "out"), "--content-type", "text/csv", "--split-type", "Line",
                  "--strategy", "SingleRecord", "--assemble-with", "Line"], env)
    assert result.exit_code == 0, result.output
    assert "Transform job cli-tj: Completed" in result.stderr
    answers = [json.loads(line) for line in
               (tmp_path / "out" / "rows.csv.out").read_text().splitlines()]
    assert [(a["model"], a["body"], a["content_type"]) for a in answers] == [
        ("v1", "1,2", "text/csv"), ("v1", "3,4", "text/csv"), ("v1", "5,6", "text/csv")]
    # The existing model by name; MultiRecord packs the lines into one request.
    result = run(["transform", "cli-tj", "--name", "cli-tj2", "--input", str(tmp_path / "in"),
                  "--output", str(tmp_path / "out2"), "--split-type", "Line",
                  "--strategy", "MultiRecord", "--max-payload-mb", "1", "--json"], env)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["TransformJobStatus"], record["ModelName"], record["BatchStrategy"]) == (
        "Completed", "cli-tj", "MultiRecord")
    answer = json.loads((tmp_path / "out2" / "rows.csv.out").read_text())
    assert answer["body"].splitlines() == ["1,2", "3,4", "5,6"]
    # A refused job leaves no model behind; a failing container fails the job (exit 1).
    result = run(["transform", images["plain-serve"], "--name", "cli-tj3", "--input",
                  str(tmp_path / "none"), "--output", str(tmp_path / "out3")], env)
    assert result.exit_code == 2 and "no such file" in result.output
    result = run(["transform", "cli-tj", "--model-data", str(model), "--input",
                  str(tmp_path / "in"), "--output", str(tmp_path / "out3")], env)
    assert result.exit_code == 2 and "existing model" in result.output
    result = run(["transform", images["plain-serve"], "--name", "cli-tj4", "--env",
                  "MODE=exit", "--input", str(tmp_path / "in"), "--output",
                  str(tmp_path / "out4")], env)
    assert result.exit_code == 1 and "MODE=exit" in result.stderr
    models = [m["ModelName"] for m in client_of(env).call("ListModels")["Models"]]
    assert sorted(models) == ["cli-tj", "cli-tj4"]
    # Transform jobs are jobs like the others: listed, described, their logs readable.
    listed = json.loads(run(["jobs", "ls", "--json"], env).stdout)
    assert {("cli-tj", "transform", "Completed"), ("cli-tj4", "transform", "Failed")} <= {
        (j["Name"], j["Kind"], j["Status"]) for j in listed}
    assert json.loads(run(["jobs", "describe", "cli-tj"], env).stdout)["TransformJobName"] == (
        "cli-tj")
    logs = run(["jobs", "logs", "cli-tj4"], env)
    assert "MODE=exit" in logs.stdout, logs.output
