"""``shipyard tune`` and ``shipyard tuning`` against a real server and real containers: each
trial's container prints ``val_loss`` computed from the hyperparameters it was given (read
from hyperparameters.json, as a real one would)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.api.server import stop_server
from shipyard.cli.tune import ranked
from shipyard.settings import Settings
from tests.support.cli import interrupt, run, shipyard_env
from tests.support.images import build_image
from tests.support.polling import until

# val_loss = (x - 3)^2 + layers + (0 for adam, 1 for sgd): the best trial is the lowest.
TRAIN = '''import json, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
with open("/opt/ml/input/config/hyperparameters.json") as f:
    hp = json.load(f)
time.sleep(float(hp.get("sleep", "0")))
if hp.get("mode") == "silent":
    print("no metric here", flush=True)
    sys.exit(0)
loss = (float(hp["x"]) - 3) ** 2 + int(hp.get("layers", "0")) + (hp.get("opt") == "sgd")
print(f"epoch=0 val_loss={loss}", flush=True)
'''
METRIC = "validation:loss=val_loss=([-0-9.e]+)"


@pytest.fixture(scope="module")
def image(docker_client: Any, base_image: str) -> str:
    return build_image(
        docker_client, "tune-quadratic", {"train.py": TRAIN},
        "ENV PYTHONUNBUFFERED=1\nCOPY train.py /opt/program/\n"
        "ENTRYPOINT [\"python3\", \"/opt/program/train.py\"]", with_toolkit=False)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[dict[str, str]]:
    """One server for the module (each test names its own tuning jobs)."""
    values = shipyard_env(tmp_path_factory.mktemp("tuning") / "state", stop_grace_seconds="5")
    yield values
    stop_server(Settings.load(environ=values))


def _tune(image: str, name: str, *extra: str) -> list[str]:
    return ["tune", image, "--name", name, "--metric", METRIC,
            "--objective", "validation:loss", "--minimize", "--strategy", "Random",
            "--seed", "7", *extra]


def _json(args: list[str], env: dict[str, str]) -> Any:
    result = run(args, env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.docker
def test_tune_shows_progress_and_the_leaderboard(env: dict[str, str], image: str) -> None:
    result = run(_tune(image, "cli-tune", "--range", "x=0:6:linear", "--range", "layers=1..3",
                       "--range", "opt=adam,sgd", "--max-jobs", "4", "--parallel", "2"), env)
    assert result.exit_code == 0, result.output
    assert "InProgress: 0/4 completed" in result.stderr
    assert "Completed: 4/4 completed, 0 running, 0 failed; best validation:loss=" in (
        result.stderr)
    assert "Hyperparameter tuning job cli-tune: Completed" in result.stderr
    board = result.stdout.splitlines()
    assert board[0].split() == ["TRIAL", "STATUS", "OBJECTIVE", "HYPERPARAMETERS"]
    assert len(board) == 5

    trials = _json(["tuning", "jobs", "cli-tune", "--json"], env)
    assert len(trials) == 4
    values = [t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for t in trials]
    assert values == sorted(values)
    for trial in trials:
        hp = trial["TunedHyperParameters"]
        assert set(hp) == {"x", "layers", "opt"}
        loss = (float(hp["x"]) - 3) ** 2 + int(hp["layers"]) + (hp["opt"] == "sgd")
        assert trial["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == (
            pytest.approx(loss))
    assert [line.split()[0] for line in board[1:]] == [t["TrainingJobName"] for t in trials]

    record = _json(["tuning", "describe", "cli-tune", "--json"], env)
    assert record["BestTrainingJob"]["TrainingJobName"] == trials[0]["TrainingJobName"]
    assert record["HyperParameterTuningJobConfig"]["ParameterRanges"] == {
        "IntegerParameterRanges": [{"Name": "layers", "MinValue": "1", "MaxValue": "3"}],
        "ContinuousParameterRanges": [{"Name": "x", "MinValue": "0", "MaxValue": "6",
                                       "ScalingType": "Linear"}],
        "CategoricalParameterRanges": [{"Name": "opt", "Values": ["adam", "sgd"]}]}
    text = run(["tuning", "describe", "cli-tune"], env).output
    assert "Status:" in text and "Completed" in text
    assert f"Best: {trials[0]['TrainingJobName']} validation:loss=" in " ".join(text.split())

    listed = [r for r in _json(["tuning", "ls", "--json"], env) if r["Name"] == "cli-tune"]
    assert listed[0]["Completed"] == 4 and listed[0]["MaxNumberOfTrainingJobs"] == 4
    assert listed[0]["BestObjectiveValue"] == values[0]
    assert listed[0]["Strategy"] == "Random"
    table = run(["tuning", "ls"], env).output
    assert any(line.split()[:4] == ["cli-tune", "Completed", "Random", "4/4"]
               for line in table.splitlines())


@pytest.mark.docker
def test_a_failed_tuning_job_exits_1_with_its_reason(env: dict[str, str], image: str) -> None:
    result = run(_tune(image, "cli-tune-fail", "--range", "x=0:6", "--hp", "mode=silent",
                       "--max-jobs", "1"), env)
    assert result.exit_code == 1, result.output
    assert "Hyperparameter tuning job cli-tune-fail: Failed" in result.stderr
    assert "FailureReason: No training job succeeded after 1 attempts" in result.stderr
    assert [line.split()[1:3] for line in result.stdout.splitlines()[1:]] == [["Failed", "-"]]
    for args in (["tuning", "describe", "nobody"], ["tuning", "jobs", "nobody"],
                 ["tuning", "stop", "nobody"], ["tuning", "watch", "nobody"]):
        missing = run(args, env)
        assert missing.exit_code == 3, (args, missing.output)
        assert "no hyperparameter tuning job named nobody" in missing.output


@pytest.mark.docker
def test_ctrl_c_detaches_then_stop_stops_the_trials(env: dict[str, str], image: str) -> None:
    status, rest = interrupt(_tune(image, "cli-tune-stop", "--range", "x=0:6", "--hp",
                                   "sleep=60", "--max-jobs", "4", "--parallel", "2"),
                             env, once="InProgress:")
    assert status == 130
    assert "Detached: hyperparameter tuning job cli-tune-stop keeps running." in rest
    assert "shipyard tuning watch cli-tune-stop" in rest
    until("two trials running", lambda: [
        t["TrainingJobStatus"] for t in _json(["tuning", "jobs", "cli-tune-stop", "--json"], env)
    ] == ["InProgress", "InProgress"])
    result = run(["tuning", "stop", "cli-tune-stop", "--wait"], env)
    assert result.exit_code == 5, result.output
    assert "Hyperparameter tuning job cli-tune-stop: Stopped" in result.output
    trials = _json(["tuning", "jobs", "cli-tune-stop", "--json"], env)
    assert [t["TrainingJobStatus"] for t in trials] == ["Stopped", "Stopped"]
    again = run(["tuning", "stop", "cli-tune-stop"], env)
    assert again.exit_code == 2 and "status Stopped" in again.output


@pytest.mark.parametrize(("spec", "why"), [
    ("lr=1e-4", "not a range"),
    ("lr=a:b", "'a' is not a number"),
    ("lr=0x1:2", "'0x1' is not a number"),
    ("layers=2..x", "'x' is not an integer"),
    ("layers=2.5..8", "'2.5' is not an integer"),
    ("lr=0.1:0.01", "LOW (0.1) is greater than HIGH (0.01)"),
    ("lr=1:2:cubic", "unknown scale 'cubic' (a continuous range takes log, linear, reverselog)"),
    ("n=1..5:reverselog", "unknown scale 'reverselog' (an integer range takes log, linear)"),
    ("opt=adam,,sgd", "an empty categorical value"),
    ("=1:2", "no NAME="),
    ("lr", "no NAME="),
])
def test_bad_ranges_are_usage_errors_before_any_server(tmp_path: Path, spec: str,
                                                      why: str) -> None:
    env = shipyard_env(tmp_path / "state")
    result = run(_tune("img", "t", "--range", spec), env)
    assert result.exit_code == 2
    assert result.output == (f"Error: --range {spec!r}: {why}; expected NAME=LOW:HIGH[:log|"
                             ":linear|:reverselog] (continuous), LOW..HIGH[:log|:linear] "
                             "(integer) or A,B,... (categorical)\n")
    assert not (tmp_path / "state").exists()  # no server was started


def test_the_objective_and_its_direction_are_checked_before_any_server(tmp_path: Path) -> None:
    env = shipyard_env(tmp_path / "state")
    result = run(["tune", "img", "--range", "x=0:1", "--metric", "train:loss=loss=(.*)",
                  "--objective", "validation:loss", "--minimize"], env)
    assert result.exit_code == 2
    assert ("--objective 'validation:loss' is not one of the --metric names (train:loss): "
            "add --metric 'validation:loss=REGEX'") in result.output
    result = run(["tune", "img", "--range", "x=0:1", "--metric", METRIC,
                  "--objective", "validation:loss"], env)
    assert result.exit_code == 2 and "give --minimize or --maximize" in result.output
    result = run(["tune", "img", "--range", "x=0:1", "--range", "x=1..2", "--metric", METRIC,
                  "--objective", "validation:loss", "--minimize"], env)
    assert result.exit_code == 2 and "--range x is given twice" in result.output
    result = run(["tune", "img", "--metric", METRIC, "--objective", "validation:loss",
                  "--minimize"], env)
    assert result.exit_code == 2 and "at least one --range" in result.output
    assert not (tmp_path / "state").exists()


def test_the_leaderboard_follows_each_trials_direction() -> None:
    def trial(name: str, kind: str | None = None, value: float = 0.0) -> dict[str, Any]:
        found: dict[str, Any] = {"TrainingJobName": name}
        if kind:
            found["FinalHyperParameterTuningJobObjectiveMetric"] = {"Type": kind,
                                                                   "Value": value}
        return found

    maximized = [trial("t-001", "Maximize", 0.5), trial("t-002"), trial("t-003", "Maximize", 0.9)]
    assert [t["TrainingJobName"] for t in ranked(maximized)] == ["t-003", "t-001", "t-002"]
    minimized = [trial("t-002"), trial("t-001"), trial("t-004", "Minimize", 2.0),
                 trial("t-003", "Minimize", -1.0)]
    assert [t["TrainingJobName"] for t in ranked(minimized)] == [
        "t-003", "t-004", "t-001", "t-002"]
