"""Hyperparameter tuning jobs through the plane's door and boto3, on the in-memory runtime:
each trial is a training job whose "container" prints the objective computed from the
hyperparameters it was given (read from its hyperparameters.json, as a real one would)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from shipyard.control import ControlPlane
from shipyard.errors import ValidationError
from shipyard.runtimes import FakeBehaviour
from shipyard.runtimes.base import ContainerSpec
from tests.support.api import REGION, serving, session
from tests.support.jobs import training_request
from tests.support.planes import fake_plane

WAIT_S = 60
METRICS = [{"Name": "validation:loss", "Regex": r"val_loss=([-0-9.e]+)"}]
TRIAL_NAME = re.compile(r"^(?P<tuning>.+)-(?P<n>\d{3})-[0-9a-f]{8}$")


def hyperparameters(spec: ContainerSpec) -> dict[str, str]:
    path = Path(spec.root_dir or "") / "input" / "config" / "hyperparameters.json"
    return dict(json.loads(path.read_text()))


def quadratic(spec: ContainerSpec) -> FakeBehaviour:
    """val_loss = (x - 3)^2 + layers, printed once per epoch (three epochs)."""
    hp = hyperparameters(spec)
    loss = (float(hp.get("x", 0)) - 3) ** 2 + int(hp.get("layers", 0))
    return FakeBehaviour(logs=tuple(f"epoch={e} val_loss={loss + 2 - e}" for e in range(3)))


def tuning_request(name: str, tmp: Path, *, strategy: str = "Random", max_jobs: int | None = 6,
                   parallel: int = 2, ranges: dict[str, Any] | None = None,
                   **config: Any) -> dict[str, Any]:
    definition = training_request("unused", tmp)
    del definition["TrainingJobName"]
    definition["AlgorithmSpecification"]["MetricDefinitions"] = METRICS
    definition["StaticHyperParameters"] = {"static": "kept"}
    limits: dict[str, Any] = {"MaxParallelTrainingJobs": parallel}
    if max_jobs is not None:
        limits["MaxNumberOfTrainingJobs"] = max_jobs
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": strategy,
            "HyperParameterTuningJobObjective": {"Type": "Minimize",
                                                 "MetricName": "validation:loss"},
            "ResourceLimits": limits,
            "ParameterRanges": ranges if ranges is not None else {
                "ContinuousParameterRanges": [{"Name": "x", "MinValue": "0",
                                               "MaxValue": "6"}],
                "IntegerParameterRanges": [{"Name": "layers", "MinValue": "1",
                                            "MaxValue": "4"}]},
            **config,
        },
        "TrainingJobDefinition": definition,
    }


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    made, _ = fake_plane(tmp_path, quadratic)
    yield made
    made.close()


def test_random_search_runs_every_trial_as_a_training_job_and_finds_the_best(
        plane: ControlPlane, tmp_path: Path) -> None:
    plane.create("tuning", tuning_request("tune-random", tmp_path, RandomSeed=7))
    record = plane.wait("tuning", "tune-random", timeout=WAIT_S)
    assert record["HyperParameterTuningJobStatus"] == "Completed", record.get("FailureReason")
    assert record["TrainingJobStatusCounters"] == {
        "Completed": 6, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0,
        "Stopped": 0}
    assert record["ObjectiveStatusCounters"] == {"Succeeded": 6, "Pending": 0, "Failed": 0}
    trials = plane.tuning_trials("tune-random")
    assert len(trials) == 6
    values = [t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for t in trials]
    best = record["BestTrainingJob"]
    assert best["FinalHyperParameterTuningJobObjectiveMetric"] == {
        "Type": "Minimize", "MetricName": "validation:loss", "Value": min(values)}
    for trial in trials:
        match = TRIAL_NAME.match(trial["TrainingJobName"])
        assert match and match["tuning"] == "tune-random"
        job = plane.describe("training", trial["TrainingJobName"])
        assert job["TuningJobArn"] == record["HyperParameterTuningJobArn"]
        hp = job["HyperParameters"]
        assert hp["_tuning_objective_metric"] == "validation:loss"
        assert hp["static"] == "kept"
        assert set(trial["TunedHyperParameters"]) == {"x", "layers"}
        assert 0 <= float(hp["x"]) <= 6 and 1 <= int(hp["layers"]) <= 4
    assert {int(TRIAL_NAME.match(t["TrainingJobName"])["n"]) for t in trials} == set(range(1, 7))
    # As described, the definition's static hyperparameters name the objective (SDK attach).
    assert record["TrainingJobDefinition"]["StaticHyperParameters"] == {
        "static": "kept", "_tuning_objective_metric": "validation:loss"}


def test_a_definition_given_tuning_resources_is_described_with_a_resource_config(
        plane: ControlPlane, tmp_path: Path) -> None:
    """What SDK v2.25x sends, and what its attach() reads back."""
    request = tuning_request("tune-resources", tmp_path, max_jobs=1)
    definition = request["TrainingJobDefinition"]
    definition["HyperParameterTuningResourceConfig"] = definition.pop("ResourceConfig")
    plane.create("tuning", request)
    record = plane.wait("tuning", "tune-resources", timeout=WAIT_S)
    assert record["TrainingJobDefinition"]["ResourceConfig"] == record[
        "TrainingJobDefinition"]["HyperParameterTuningResourceConfig"]


def test_several_definitions_take_turns_and_tags_stick(plane: ControlPlane,
                                                        tmp_path: Path) -> None:
    request = tuning_request("tune-multi", tmp_path, max_jobs=4, RandomSeed=9)
    config = request["HyperParameterTuningJobConfig"]
    objective = config.pop("HyperParameterTuningJobObjective")
    ranges = config.pop("ParameterRanges")
    first = request.pop("TrainingJobDefinition")
    request["TrainingJobDefinitions"] = [
        {**first, "DefinitionName": "wide", "TuningObjective": objective,
         "HyperParameterRanges": ranges},
        {**first, "DefinitionName": "narrow", "TuningObjective": objective,
         "HyperParameterRanges": {"CategoricalParameterRanges": [
             {"Name": "x", "Values": ["2", "3", "4"]}]}}]
    request["Tags"] = [{"Key": "team", "Value": "search"}]
    arn = plane.create("tuning", request)["HyperParameterTuningJobArn"]
    record = plane.wait("tuning", "tune-multi", timeout=WAIT_S)
    assert record["HyperParameterTuningJobStatus"] == "Completed"
    trials = plane.tuning_trials("tune-multi")
    assert sorted(t["TrainingJobDefinitionName"] for t in trials) == [
        "narrow", "narrow", "wide", "wide"]
    for trial in trials:
        if trial["TrainingJobDefinitionName"] == "narrow":
            assert set(trial["TunedHyperParameters"]) == {"x"}
            assert trial["TunedHyperParameters"]["x"] in {"2", "3", "4"}
    assert [d["StaticHyperParameters"]["_tuning_objective_metric"]
            for d in record["TrainingJobDefinitions"]] == ["validation:loss"] * 2
    assert plane.list_tags(arn) == [("team", "search")]


def test_grid_runs_each_combination_once(plane: ControlPlane, tmp_path: Path) -> None:
    ranges = {"CategoricalParameterRanges": [
        {"Name": "x", "Values": ["1", "3", "5"]}, {"Name": "layers", "Values": ["1", "2"]}]}
    plane.create("tuning", tuning_request("tune-grid", tmp_path, strategy="Grid",
                                          max_jobs=None, parallel=3, ranges=ranges))
    record = plane.wait("tuning", "tune-grid", timeout=WAIT_S)
    assert record["HyperParameterTuningJobStatus"] == "Completed"
    assert record["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 6
    points = sorted((t["TunedHyperParameters"]["x"], t["TunedHyperParameters"]["layers"])
                    for t in plane.tuning_trials("tune-grid"))
    assert points == [(x, n) for x in ("1", "3", "5") for n in ("1", "2")]
    assert record["BestTrainingJob"]["TunedHyperParameters"] == {"x": "3", "layers": "1"}


def test_a_trial_whose_objective_never_appears_fails_and_so_does_the_tuning_job(
        tmp_path: Path) -> None:
    plane, _ = fake_plane(tmp_path, lambda spec: FakeBehaviour(logs=("loss is 3",)))
    try:
        plane.create("tuning", tuning_request("tune-nometric", tmp_path, max_jobs=2))
        record = plane.wait("tuning", "tune-nometric", timeout=WAIT_S)
        assert record["HyperParameterTuningJobStatus"] == "Failed"
        assert record["FailureReason"].startswith("No training job succeeded after 2 attempts")
        for trial in plane.tuning_trials("tune-nometric"):
            assert trial["TrainingJobStatus"] == "Failed"
            assert trial["ObjectiveStatus"] == "Failed"
            assert "'validation:loss' was never emitted" in trial["FailureReason"]
            assert r"val_loss=([-0-9.e]+)" in trial["FailureReason"]
    finally:
        plane.close()


def test_stop_stops_the_running_trials(tmp_path: Path) -> None:
    started = threading.Event()

    def forever(spec: ContainerSpec) -> FakeBehaviour:
        started.set()
        return FakeBehaviour(duration=None, logs=("val_loss=1.0",))

    plane, runtime = fake_plane(tmp_path, forever)
    try:
        plane.create("tuning", tuning_request("tune-stop", tmp_path, max_jobs=4, parallel=2))
        assert started.wait(WAIT_S)
        _until(lambda: len(plane.tuning_trials("tune-stop")) == 2)
        plane.stop("tuning", "tune-stop")
        record = plane.wait("tuning", "tune-stop", timeout=WAIT_S)
        assert record["HyperParameterTuningJobStatus"] == "Stopped"
        trials = plane.tuning_trials("tune-stop")
        assert len(trials) == 2  # nothing launched after the stop
        assert {t["TrainingJobStatus"] for t in trials} == {"Stopped"}
        assert len(runtime.signals) >= 2
    finally:
        plane.close()


def test_auto_early_stopping_stops_a_trial_worse_than_the_median(tmp_path: Path) -> None:
    def handler(spec: ContainerSpec) -> FakeBehaviour:
        hp = hyperparameters(spec)
        if hp["x"] == "bad":
            # Keeps running, each epoch far worse than the others were at the same epoch.
            return FakeBehaviour(duration=None, logs=tuple(
                f"val_loss={100 + e}" for e in range(10)))
        return FakeBehaviour(logs=tuple(f"val_loss={1.0 / (e + 1)}" for e in range(10)))

    plane, _ = fake_plane(tmp_path, handler)
    # Grid without a seed runs the values in order: three good trials end before the bad one
    # starts (AWS compares with trials that ended; Shipyard waits for three of them).
    ranges = {"CategoricalParameterRanges": [{"Name": "x", "Values": ["good", "good2",
                                                                      "good3", "bad"]}]}
    try:
        plane.create("tuning", tuning_request(
            "tune-early", tmp_path, strategy="Grid", max_jobs=None, parallel=1,
            ranges=ranges, TrainingJobEarlyStoppingType="Auto"))
        record = plane.wait("tuning", "tune-early", timeout=WAIT_S)
        assert record["HyperParameterTuningJobStatus"] == "Completed"
        by_x = {t["TunedHyperParameters"]["x"]: t for t in plane.tuning_trials("tune-early")}
        assert by_x["bad"]["TrainingJobStatus"] == "Stopped"
        assert by_x["good"]["TrainingJobStatus"] == "Completed"
        assert record["TrainingJobStatusCounters"]["Stopped"] == 1
    finally:
        plane.close()


def test_completion_criteria_end_the_job_early(plane: ControlPlane, tmp_path: Path) -> None:
    plane.create("tuning", tuning_request(
        "tune-target", tmp_path, max_jobs=20, parallel=1, RandomSeed=3,
        TuningJobCompletionCriteria={"TargetObjectiveMetricValue": 1000.0}))
    record = plane.wait("tuning", "tune-target", timeout=WAIT_S)
    assert record["HyperParameterTuningJobStatus"] == "Completed"
    # Every value meets so loose a target: the first trial ends the search.
    assert len(plane.tuning_trials("tune-target")) == 1
    assert "TuningJobCompletionDetails" in record


def test_hyperband_lets_a_trial_that_ran_in_full_complete(plane: ControlPlane,
                                                           tmp_path: Path) -> None:
    # quadratic prints three epochs: MaxResource 3 is a full run, never a reason to stop.
    plane.create("tuning", tuning_request(
        "tune-band", tmp_path, strategy="Hyperband", max_jobs=3, parallel=1, RandomSeed=1,
        StrategyConfig={"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 3}}))
    record = plane.wait("tuning", "tune-band", timeout=WAIT_S)
    assert record["HyperParameterTuningJobStatus"] == "Completed"
    assert record["TrainingJobStatusCounters"]["Completed"] == 3


def test_convergence_ends_the_job_once_the_best_stops_moving(plane: ControlPlane,
                                                              tmp_path: Path) -> None:
    # Every point scores 5 (or 6) plus almost nothing: the best settles at once.
    ranges = {"ContinuousParameterRanges": [{"Name": "x", "MinValue": "3",
                                             "MaxValue": "3.0001"}],
              "IntegerParameterRanges": [{"Name": "layers", "MinValue": "5", "MaxValue": "6"}]}
    plane.create("tuning", tuning_request(
        "tune-converge", tmp_path, max_jobs=40, parallel=1, RandomSeed=2, ranges=ranges,
        TuningJobCompletionCriteria={"ConvergenceDetected": {
            "CompleteOnConvergence": "Enabled"}}))
    record = plane.wait("tuning", "tune-converge", timeout=WAIT_S)
    assert record["HyperParameterTuningJobStatus"] == "Completed"
    assert "ConvergenceDetectedTime" in record["TuningJobCompletionDetails"]
    assert 11 <= len(plane.tuning_trials("tune-converge")) < 40


def test_warm_start_seeds_the_search_and_compares_with_the_parents_best(
        plane: ControlPlane, tmp_path: Path) -> None:
    plane.create("tuning", tuning_request("tune-parent", tmp_path, max_jobs=4, RandomSeed=4))
    parent = plane.wait("tuning", "tune-parent", timeout=WAIT_S)
    plane.create("tuning", {**tuning_request("tune-child", tmp_path, max_jobs=2, RandomSeed=5),
                            "WarmStartConfig": {
                                "ParentHyperParameterTuningJobs": [
                                    {"HyperParameterTuningJobName": "tune-parent"}],
                                "WarmStartType": "IdenticalDataAndAlgorithm"}})
    child = plane.wait("tuning", "tune-child", timeout=WAIT_S)
    assert child["HyperParameterTuningJobStatus"] == "Completed"
    assert len(plane.tuning_trials("tune-child")) == 2
    values = [b["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
              for b in (parent["BestTrainingJob"], child["BestTrainingJob"])]
    assert child["OverallBestTrainingJob"][
        "FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == min(values)
    assert child["WarmStartConfig"]["WarmStartType"] == "IdenticalDataAndAlgorithm"
    # A parent still running cannot seed anything.
    plane.create("tuning", tuning_request("tune-slow", tmp_path, max_jobs=1))
    with pytest.raises(ValidationError, match="needs parents that have ended"):
        plane.create("tuning", {**tuning_request("tune-early-child", tmp_path),
                                "WarmStartConfig": {
                                    "ParentHyperParameterTuningJobs": [
                                        {"HyperParameterTuningJobName": "tune-slow"}],
                                    "WarmStartType": "TransferLearning"}})
    plane.wait("tuning", "tune-slow", timeout=WAIT_S)


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r["HyperParameterTuningJobConfig"].update(
        Strategy="Hyperband", TrainingJobEarlyStoppingType="Auto"), "must be Off"),
    (lambda r: r["TrainingJobDefinition"]["AlgorithmSpecification"].update(
        MetricDefinitions=[{"Name": "other", "Regex": "x=(.*)"}]), "not one of the"),
    (lambda r: r.update(TrainingJobDefinitions=[r["TrainingJobDefinition"]]),
     "Exactly one of"),
    (lambda r: r["HyperParameterTuningJobConfig"].update(Strategy="Grid"),
     "categorical"),
    (lambda r: r["TrainingJobDefinition"]["AlgorithmSpecification"].update(
        TrainingImage="no/such:image"), "no/such:image"),
])
def test_bad_requests_are_refused_before_anything_runs(
        plane: ControlPlane, tmp_path: Path, change: Callable[[dict[str, Any]], None],
        message: str) -> None:
    request = tuning_request("tune-bad", tmp_path)
    change(request)
    with pytest.raises(Exception, match=message) as caught:
        plane.create("tuning", request)
    assert isinstance(caught.value, ValidationError) or "Image" in type(caught.value).__name__
    assert plane.list_resources("tuning") == []
    assert plane.list_resources("training") == []


def test_boto3_describes_lists_and_pages_trials(plane: ControlPlane, tmp_path: Path) -> None:
    with serving(plane.settings, plane) as api:
        akid, secret = api.server.keys.default
        client = session(akid, secret).client("sagemaker", endpoint_url=api.url,
                                              region_name=REGION,
                                              config=Config(retries={"max_attempts": 1}))
        arn = client.create_hyper_parameter_tuning_job(
            **tuning_request("tune-boto", tmp_path, RandomSeed=11))[
            "HyperParameterTuningJobArn"]
        assert arn.endswith(":hyper-parameter-tuning-job/tune-boto")
        plane.wait("tuning", "tune-boto", timeout=WAIT_S)
        described = client.describe_hyper_parameter_tuning_job(
            HyperParameterTuningJobName="tune-boto")
        assert described["HyperParameterTuningJobStatus"] == "Completed"
        listed = client.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"]
        assert [s["HyperParameterTuningJobName"] for s in listed] == ["tune-boto"]
        pages, token = [], None
        while True:
            kwargs = {"NextToken": token} if token else {}
            page = client.list_training_jobs_for_hyper_parameter_tuning_job(
                HyperParameterTuningJobName="tune-boto", SortBy="FinalObjectiveMetricValue",
                SortOrder="Ascending", MaxResults=4, **kwargs)
            pages.append(page["TrainingJobSummaries"])
            token = page.get("NextToken")
            if not token:
                break
        assert [len(p) for p in pages] == [4, 2]
        values = [s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
                  for p in pages for s in p]
        assert values == sorted(values)
        assert pages[0][0]["TrainingJobName"] == described["BestTrainingJob"]["TrainingJobName"]
        with pytest.raises(ClientError) as caught:
            client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="nope")
        assert caught.value.response["Error"]["Code"] == "ValidationException"


def _until(check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
