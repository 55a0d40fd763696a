"""The CLI against real containers: CliRunner for exit codes and output, a real process
for Ctrl-C (detach must leave the job running)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.api.server import stop_server
from shipyard.settings import Settings
from tests.support.cli import interrupt, run, shipyard_env
from tests.support.polling import until

pytestmark = pytest.mark.docker


@pytest.fixture
def env(tmp_path: Path, docker_client: Any) -> Iterator[dict[str, str]]:
    """Settings for the CLI; the server it starts in the background is stopped afterwards."""
    values = shipyard_env(tmp_path / "state", stop_grace_seconds="5")
    yield values
    stop_server(Settings.load(environ=values))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.csv").write_text(f"{i}\n")
    return folder


def test_train_describe_ls_logs(env: dict[str, str], data: Path, tmp_path: Path,
                                images: dict[str, str]) -> None:
    result = run(["train", images["seed000"], "--name", "cli-train", "--channel",
                  f"training={data}", "--output", str(tmp_path / "out")], env)
    assert result.exit_code == 0, result.output
    assert "Completed - Training job completed" in result.output
    assert (tmp_path / "out" / "cli-train" / "output" / "model.tar.gz").is_file()
    described = json.loads(run(["jobs", "describe", "cli-train"], env).output)
    assert described["TrainingJobStatus"] == "Completed"
    assert described["ModelArtifacts"]["S3ModelArtifacts"] == (
        tmp_path / "out" / "cli-train" / "output" / "model.tar.gz").as_uri()
    listed = json.loads(run(["jobs", "ls", "--json"], env).output)
    assert [(j["Name"], j["Kind"], j["Status"]) for j in listed] == [
        ("cli-train", "training", "Completed")]
    table = run(["jobs", "ls"], env).output
    assert "cli-train" in table and "Completed" in table


def test_failed_job_exit_code_and_reason(env: dict[str, str], data: Path,
                                         images: dict[str, str]) -> None:
    result = run(["train", images["behaviours"], "--name", "cli-fail", "--channel",
                  f"training={data}", "--env", "MODE=exit-3"], env)
    assert result.exit_code == 1
    assert "FailureReason: AlgorithmError" in result.output
    assert "about to fail" in run(["jobs", "logs", "cli-fail"], env).output


def test_bad_input_is_a_clear_usage_error(env: dict[str, str], data: Path,
                                          images: dict[str, str]) -> None:
    result = run(["train", images["seed000"], "--name", "bad_name", "--channel",
                  f"training={data}"], env)
    assert result.exit_code == 2
    assert "Member must satisfy regular expression pattern" in result.output
    assert "Traceback" not in result.output
    result = run(["train", "no-such/image:1", "--channel", f"training={data}"], env)
    assert result.exit_code == 2 and "no-such/image:1" in result.output
    result = run(["train", images["seed000"], "--hp", "novalue"], env)
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    assert run(["jobs", "describe", "nobody"], env).exit_code == 3


def test_detach_then_stop(env: dict[str, str], data: Path, images: dict[str, str]) -> None:
    result = run(["train", images["toolkit-behaviours"], "--name", "cli-stop", "--channel",
                  f"training={data}", "--env", "MODE=checkpoint-on-sigterm", "--detach"], env)
    assert result.exit_code == 0
    assert result.output.strip().endswith("training-job/cli-stop")
    _wait_for_log(env, "cli-stop", "ready")
    result = run(["jobs", "stop", "cli-stop", "--wait"], env)
    assert result.exit_code == 5, result.output
    assert "Stopped" in result.output
    assert "checkpoint saved" in run(["jobs", "logs", "cli-stop"], env).output


def test_ctrl_c_detaches_and_job_keeps_running(env: dict[str, str], data: Path,
                                               images: dict[str, str]) -> None:
    status, rest = interrupt(["train", images["behaviours"], "--name", "cli-detach",
                              "--channel", f"training={data}", "--env", "MODE=sleep",
                              "--env", "SLEEP=3"], env, once="mode sleep")
    assert status == 130
    assert "Detached: training job cli-detach keeps running." in rest
    assert "shipyard jobs logs -f cli-detach" in rest
    result = run(["jobs", "wait", "cli-detach"], env)
    assert result.exit_code == 0, result.output
    assert "Completed" in result.output


def test_process_command(env: dict[str, str], tmp_path: Path, images: dict[str, str]) -> None:
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.txt").write_text(name)
    result = run(["process", images["processing"], "--name", "cli-proc",
                  "--input", f"first={tmp_path / 'first'}",
                  "--input", f"second={tmp_path / 'second'}",
                  "--output", f"report={tmp_path / 'report'}",
                  "--entrypoint", "python3 /opt/program/p.py"], env)
    assert result.exit_code == 0, result.output
    assert "ExitMessage: processed 2 files" in result.output
    assert (tmp_path / "report" / "summary.txt").read_text() == (
        "first/first.txt: first\nsecond/second.txt: second\n")


def test_config_show_explains_sources(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["--region", "eu-west-1", "config", "show"], env)
    shown = json.loads(result.output)
    assert shown["region"] == {"value": "eu-west-1", "source": "argument"}
    assert shown["runtime"] == {"value": "docker", "source": "environment"}
    assert shown["transfer_workers"]["source"] == "default"
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "config.json").write_text(json.dumps({"transfer_workers": 3}))
    shown = json.loads(run(["config", "show"], env).output)
    assert shown["transfer_workers"] == {"value": "3", "source": "config file"}
    bad = run(["--stop-grace-seconds", "soon", "config", "show"], env)
    assert bad.exit_code == 2 and "stop_grace_seconds" in bad.output


def _wait_for_log(env: dict[str, str], name: str, text: str, timeout: float = 30) -> None:
    until(f"{text!r} logged by {name}", lambda: text in run(["jobs", "logs", name], env).output,
          timeout)
