"""A tuning job survives its server: the server process is killed while trials run, a new one
on the same data directory rebuilds the search from the stored trials, reattaches those in
flight and finishes the job, running no trial twice (real containers, a real server)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shipyard.api.server import read_info
from shipyard.client import Client
from shipyard.settings import Settings
from tests.support.cli import shipyard_env
from tests.support.jobs import training_request

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _start(env: dict[str, str], settings: Settings) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "shipyard.api.server"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while (info := read_info(settings)) is None or info.pid != proc.pid:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc


def test_a_killed_server_leaves_a_tuning_job_the_next_one_finishes(
        tmp_path: Path, images: dict[str, str]) -> None:
    env = {**os.environ, **shipyard_env(tmp_path / "state")}
    settings = Settings.load(environ=env)
    definition = training_request("unused", tmp_path, image=images["behaviours"],
                                  Environment={"MODE": "metrics"})
    del definition["TrainingJobName"]
    definition["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "loss", "Regex": r"loss=([0-9.]+)"}]
    request = {
        "HyperParameterTuningJobName": "survivor",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random", "RandomSeed": 5,
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "loss"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 1},
            "ParameterRanges": {"IntegerParameterRanges": [
                {"Name": "n", "MinValue": "1", "MaxValue": "1000"}]}},
        "TrainingJobDefinition": definition,
    }
    first = _start(env, settings)
    try:
        client = Client.for_settings(settings)
        client.call("CreateHyperParameterTuningJob", **request)
        deadline = time.monotonic() + 120
        while client.describe("tuning", "survivor")["TrainingJobStatusCounters"][
                "Completed"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = _start(env, settings)
    try:
        client = Client.for_settings(settings)
        record = client.wait("tuning", "survivor")
        assert record["HyperParameterTuningJobStatus"] == "Completed", record.get(
            "FailureReason")
        assert record["TrainingJobStatusCounters"]["Completed"] == 4
        trials = client.call("ListTrainingJobsForHyperParameterTuningJob",
                             HyperParameterTuningJobName="survivor",
                             MaxResults=100)["TrainingJobSummaries"]
        names = sorted(t["TrainingJobName"] for t in trials)
        assert [re.sub(r"-[0-9a-f]{8}$", "", n) for n in names] == [
            f"survivor-{i:03d}" for i in range(1, 5)]
        assert len({t["TunedHyperParameters"]["n"] for t in trials}) == 4
        jobs = client.list_jobs("training", limit=100)
        assert sorted(j["TrainingJobName"] for j in jobs) == names
        for name in names:
            lines = [line.message for stream in client.log_streams("training", name)
                     for line in client.read_logs("training", stream, None)[0]]
            assert sum(line.startswith("mode metrics") for line in lines) == 1, name
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
