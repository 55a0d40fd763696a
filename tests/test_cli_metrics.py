"""``shipyard jobs metrics`` and ``shipyard endpoints metrics`` against a real server (in a
thread of the test, found by the CLI through the data directory's ``server.json``): the
series as text and JSON, and the terminal chart when asked. Jobs run on the FakeRuntime;
the endpoint on the process runtime (tests/support/workloads.py's ``serve``), so no
container engine is needed."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.cli.charts import Series, render, since_seconds
from shipyard.control import ControlPlane
from shipyard.runtimes import JOB_NAME_LABEL, FakeBehaviour
from shipyard.runtimes.base import ContainerSpec
from shipyard.settings import Settings
from tests.support.api import Api, delete_endpoints, deploy, serving
from tests.support.cli import run
from tests.support.jobs import training_request
from tests.support.planes import fake_plane
from tests.support.polling import until
from tests.support.workloads import serve_project

LOSSES = [0.9, 0.5, 0.3, 0.2]


def _env(data_dir: Path) -> dict[str, str]:
    return {"SHIPYARD_DATA_DIR": str(data_dir)}


def _curve(spec: ContainerSpec) -> FakeBehaviour:
    if spec.labels.get(JOB_NAME_LABEL) == "curve":
        return FakeBehaviour(logs=tuple(f"epoch={i} loss={v} acc={1 - v}"
                                        for i, v in enumerate(LOSSES)))
    return FakeBehaviour()


@pytest.fixture(scope="module")
def job_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A server over the FakeRuntime with training job ``curve`` done; its data directory."""
    tmp = tmp_path_factory.mktemp("cli-job-metrics")
    plane, _ = fake_plane(tmp, _curve, api_port=0)
    with serving(plane.settings, plane) as api:
        api.sm.create_training_job(**training_request("curve", tmp, AlgorithmSpecification={
            "TrainingImage": "example/train:1", "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"},
                                  {"Name": "acc", "Regex": "acc=([0-9.]+)"}]}))
        plane.wait("training", "curve", timeout=30)
        yield plane.settings.data_dir


def test_jobs_metrics_json_is_every_point(job_server: Path) -> None:
    result = run(["jobs", "metrics", "curve", "--metric", "loss", "--json"], _env(job_server))
    assert result.exit_code == 0, result.output
    points = json.loads(result.stdout)
    assert [p["Value"] for p in points] == LOSSES
    assert {p["Host"] for p in points} == {"algo-1"}


def test_jobs_metrics_prints_a_chart_only_when_asked(job_server: Path) -> None:
    plain = run(["jobs", "metrics", "curve"], _env(job_server))
    assert plain.exit_code == 0, plain.output
    lines = plain.stdout.splitlines()
    assert len(lines) == 2 * len(LOSSES)  # stdout is no terminal here: no chart
    assert lines[0].endswith("algo-1 loss = 0.9") or lines[0].endswith("algo-1 acc = 0.1")

    charted = run(["jobs", "metrics", "curve", "--chart"], _env(job_server))
    assert charted.exit_code == 0, charted.output
    text = charted.stdout
    assert "curve: loss" in text and "curve: acc" in text
    assert "seconds since" in text and "┌" in text
    assert "\x1b[" not in text  # no terminal: no colour codes


def test_jobs_metrics_since(job_server: Path) -> None:
    result = run(["jobs", "metrics", "curve", "--since", "1d", "--json"], _env(job_server))
    assert len(json.loads(result.stdout)) == 2 * len(LOSSES)
    bad = run(["jobs", "metrics", "curve", "--since", "soon"], _env(job_server))
    assert bad.exit_code == 2
    assert "not a duration" in bad.output


def test_jobs_metrics_of_no_job_exits_not_found(job_server: Path) -> None:
    result = run(["jobs", "metrics", "nope"], _env(job_server))
    assert result.exit_code == 3, result.output


@pytest.fixture(scope="module")
def endpoint_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, Path]]:
    """A server on the process runtime with endpoint ``charted`` invoked 5 times."""
    data = tmp_path_factory.mktemp("cli-endpoint-metrics")
    settings = Settings.load({"data_dir": str(data / "state"), "api_port": 0,
                              "runtime": "process", "stop_grace_seconds": 2,
                              "endpoint_startup_timeout_seconds": 20}, environ={})
    plane = ControlPlane(settings)
    with serving(settings, plane) as api:
        try:
            deploy(api, "charted", serve_project(data / "project"))
            for i in range(5):
                api.rt.invoke_endpoint(EndpointName="charted", Body=f"[{i}]".encode())
            yield api, settings.data_dir
        finally:
            delete_endpoints(api, plane)


def _series(data_dir: Path, *args: str) -> list[dict[str, Any]]:
    result = run(["endpoints", "metrics", "charted", "--json", *args], _env(data_dir))
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout))


def test_endpoints_metrics_reads_cloudwatch(endpoint_server: tuple[Api, Path]) -> None:
    _, data_dir = endpoint_server

    def invocations() -> float | None:
        series = _series(data_dir, "--period", "1", "--since", "10m")
        total = sum(p["Value"] for s in series if s["MetricName"] == "Invocations"
                    for p in s["Points"])
        return total if total == 5 else None

    until("the invocations' points", invocations, timeout=20)
    series = _series(data_dir, "--period", "60", "--since", "10m")
    assert {(s["MetricName"], s["VariantName"], s["Statistic"]) for s in series} == {
        ("Invocations", "AllTraffic", "Sum"), ("ModelLatency", "AllTraffic", "Average")}
    latency = next(s for s in series if s["MetricName"] == "ModelLatency")
    assert latency["Points"] and all(p["Value"] > 0 for p in latency["Points"])
    p99 = _series(data_dir, "--metric", "ModelLatency", "--statistic", "p99")
    assert p99[0]["Statistic"] == "p99" and p99[0]["Points"]
    assert _series(data_dir, "--variant", "nope") == []

    charted = run(["endpoints", "metrics", "charted", "--period", "1", "--since", "10m",
                   "--chart"], _env(data_dir))
    assert charted.exit_code == 0, charted.output
    assert "AllTraffic Invocations Sum = " in charted.stdout
    assert "charted: Invocations (Sum, 1 s)" in charted.stdout
    assert "charted: ModelLatency (Average, 1 s)" in charted.stdout


def test_endpoints_metrics_refusals(endpoint_server: tuple[Api, Path]) -> None:
    _, data_dir = endpoint_server
    missing = run(["endpoints", "metrics", "nope"], _env(data_dir))
    assert missing.exit_code == 3, missing.output
    bad_period = run(["endpoints", "metrics", "charted", "--period", "7"], _env(data_dir))
    assert bad_period.exit_code == 2, bad_period.output
    assert "period" in bad_period.output.lower()


def test_render_draws_one_line_per_series() -> None:
    lines = [Series("algo-1", [100.0, 160.0, 220.0], [3.0, 2.0, 1.0]),
             Series("algo-2", [100.0, 160.0, 220.0], [3.5, 2.5, 1.5])]
    text = render("loss", lines, width=60)
    assert "algo-1" in text and "algo-2" in text  # the legend
    assert "seconds since" in text
    assert max(len(line) for line in text.splitlines()) <= 60
    assert render("nothing", [Series("empty")]) == ""
    assert "minutes since" in render("long", [Series("a", [0.0, 600.0], [1.0, 2.0])], width=60)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("30s", 30.0), ("10m", 600.0),
                                               ("2h", 7200.0), ("1d", 86400.0)],
                         ids=["plain", "s", "m", "h", "d"])
def test_since_seconds(text: str, seconds: float) -> None:
    assert since_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "-5m", "soon", "0"])
def test_since_seconds_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        since_seconds(text)


def test_jobs_metrics_at_a_terminal_draws_the_chart_in_colour(job_server: Path) -> None:
    """stdout a real terminal (a pty): the chart comes without asking, coloured."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "shipyard.cli", "jobs", "metrics", "curve",
                             "--metric", "loss"], stdin=subprocess.DEVNULL, stdout=follower,
                            stderr=follower, env={**os.environ, **_env(job_server),
                                                  "COLUMNS": "80"})
    os.close(follower)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the pty's other end closed: the command is done
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=30) == 0, out.decode(errors="replace")
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode(errors="replace")
    assert "algo-1 loss = 0.9" in text
    assert "curve: loss" in text and "seconds since" in text
    assert "\x1b[38;5;" in text  # coloured lines
