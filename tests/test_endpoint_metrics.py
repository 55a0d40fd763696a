"""Endpoint invocation metrics (``AWS/SageMaker``): what a real boto3 ``cloudwatch`` client
reads after invoking an endpoint through the runtime API, and the in-memory aggregation's
exactness. The endpoint runs on the process runtime (tests/support/workloads.py's ``serve``),
so no container engine is needed."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from shipyard.api import dataplane
from shipyard.api.credentials import load_or_create
from shipyard.api.server import stop_data_plane
from shipyard.control import ControlPlane
from shipyard.control.metrics.invocations import NO_ANSWER, InvocationMetrics
from shipyard.control.metrics.jobs import JobSeries
from shipyard.control.metrics.platform import open_store
from shipyard.control.metrics.service import Metrics
from shipyard.control.state.store import Store
from shipyard.settings import Settings
from tests.support.api import Api, delete_endpoints, deploy, serving, session
from tests.support.jobs import ROLE
from tests.support.polling import until
from tests.support.workloads import serve_project
from tests.test_faults import Server

NS = "AWS/SageMaker"


@dataclass
class Served:
    api: Api
    plane: ControlPlane
    cw: Any
    project: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("endpoint-metrics")
    settings = Settings.load({"data_dir": str(data / "state"), "api_port": 0,
                              "runtime": "process", "stop_grace_seconds": 2,
                              "invoke_timeout_seconds": 1,
                              "endpoint_startup_timeout_seconds": 20}, environ={})
    plane = ControlPlane(settings)
    with serving(settings, plane) as api:
        cw = session(api.akid, api.secret).client(
            "cloudwatch", endpoint_url=api.url, config=Config(retries={"max_attempts": 1}))
        try:
            yield Served(api, plane, cw, serve_project(data / "project"))
        finally:
            delete_endpoints(api, plane)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def _stats(cw: Any, endpoint: str, name: str, since: float, **extra: Any) -> dict[str, Any]:
    """Every point of ``name`` since ``since``, in one datapoint."""
    if "ExtendedStatistics" not in extra:
        extra["Statistics"] = ["SampleCount", "Sum", "Minimum", "Maximum", "Average"]
    points = cw.get_metric_statistics(
        Namespace=NS, MetricName=name, StartTime=_at(since - 120), EndTime=_at(time.time() + 60),
        Period=3600, Dimensions=[{"Name": "EndpointName", "Value": endpoint},
                                 {"Name": "VariantName", "Value": "AllTraffic"}],
        **extra)["Datapoints"]
    assert len(points) <= 1
    return dict(points[0]) if points else {}


def test_invocations_and_latencies_reach_cloudwatch(served: Served) -> None:
    since = time.time()
    deploy(served.api, "metrics-ep", served.project)
    n = 25
    for i in range(n):
        served.api.rt.invoke_endpoint(EndpointName="metrics-ep", Body=f"[{i}]".encode(),
                                      ContentType="application/json")
    count = until("Invocations flushed", lambda: _stats(
        served.cw, "metrics-ep", "Invocations", since).get("Sum") == n or None, timeout=20)
    assert count
    invocations = _stats(served.cw, "metrics-ep", "Invocations", since)
    assert invocations["SampleCount"] == n and invocations["Unit"] == "None"
    per_instance = _stats(served.cw, "metrics-ep", "InvocationsPerInstance", since)
    assert per_instance["Sum"] == n  # one instance
    model = _stats(served.cw, "metrics-ep", "ModelLatency", since)
    assert model["SampleCount"] == n and model["Unit"] == "Microseconds"
    # A local HTTP round trip: more than 10 us, far less than the 1 s timeout.
    assert 10 < model["Minimum"] <= model["Average"] <= model["Maximum"] < 1e6
    overhead = _stats(served.cw, "metrics-ep", "OverheadLatency", since)
    assert overhead["SampleCount"] == n and 0 <= overhead["Minimum"] < 1e6
    p50 = _stats(served.cw, "metrics-ep", "ModelLatency", since,
                 ExtendedStatistics=["p50", "p100"])
    if p50:
        extended = p50["ExtendedStatistics"]
        assert model["Minimum"] <= extended["p50"] <= model["Maximum"]
        assert extended["p100"] == pytest.approx(model["Maximum"])
    for errors in ("Invocation4XXErrors", "Invocation5XXErrors"):
        assert _stats(served.cw, "metrics-ep", errors, since)["Sum"] == 0
    listed = served.cw.list_metrics(Namespace=NS, Dimensions=[
        {"Name": "EndpointName", "Value": "metrics-ep"}])["Metrics"]
    assert {m["MetricName"] for m in listed} == {
        "Invocations", "InvocationsPerInstance", "ModelLatency", "OverheadLatency",
        "Invocation4XXErrors", "Invocation5XXErrors", "ModelSetupTime"}


def test_model_errors_count_as_4xx_and_5xx(served: Served) -> None:
    since = time.time()
    deploy(served.api, "errors-ep", served.project)
    for body in (b"fail", b"fail", b"[1]", b"sleep:3"):  # 400, 400, 200, a timeout
        try:
            served.api.rt.invoke_endpoint(EndpointName="errors-ep", Body=body)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ModelError"
    until("errors flushed", lambda: _stats(
        served.cw, "errors-ep", "Invocations", since).get("Sum") == 4 or None, timeout=20)
    client = _stats(served.cw, "errors-ep", "Invocation4XXErrors", since)
    server = _stats(served.cw, "errors-ep", "Invocation5XXErrors", since)
    assert (client["Sum"], client["SampleCount"], client["Average"]) == (2, 4, 0.5)
    assert (server["Sum"], server["Maximum"]) == (1, 1)
    # The timed-out request has no model latency; the 4xx answers do.
    assert _stats(served.cw, "errors-ep", "ModelLatency", since)["SampleCount"] == 3


def test_aggregation_keeps_count_sum_extremes_and_percentiles(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": str(tmp_path)}, environ={})
    base = float(int(time.time()) // 60 * 60 - 120)  # a minute's start, two minutes ago
    now = [base + 0.5]
    recorder = InvocationMetrics(settings, clock=lambda: now[0])
    values = [100.0 + 7.3 * i for i in range(200)] + [250_000.0]
    for i, micros in enumerate(values):
        status = 500 if i % 50 == 0 else 404 if i % 40 == 0 else 200
        recorder.record("ep", "v1", 4, status, micros / 1e6, micros / 1e6 + 30e-6)
    recorder.record("ep", "v1", 4, NO_ANSWER, -1.0, 1.0)
    recorder.flush()
    assert recorder._seconds  # the second is not over: kept
    now[0] += 1
    recorder.flush()
    assert not recorder._seconds
    recorder.close()
    Store(tmp_path / "state.db").close()
    metrics = Metrics(open_store(settings), JobSeries(tmp_path / "state.db"),
                      account_id="000000000000", clock=lambda: now[0])
    try:
        def stat(name: str, **extra: Any) -> dict[str, Any]:
            if "ExtendedStatistics" not in extra:
                extra["Statistics"] = ["SampleCount", "Sum", "Minimum", "Maximum"]
            points = metrics.get_metric_statistics({
                "Namespace": NS, "MetricName": name, "StartTime": base, "EndTime": base + 60,
                "Period": 60, "Dimensions": [{"Name": "EndpointName", "Value": "ep"},
                                             {"Name": "VariantName", "Value": "v1"}],
                **extra})["Datapoints"]
            return dict(points[0])

        latency = stat("ModelLatency")
        assert latency["SampleCount"] == len(values)
        assert latency["Sum"] == pytest.approx(sum(values))
        assert (latency["Minimum"], latency["Maximum"]) == (100.0, 250_000.0)
        ordered = sorted(values)
        percentiles = stat("ModelLatency",
                           ExtendedStatistics=["p50", "p90"])["ExtendedStatistics"]
        assert percentiles["p50"] == pytest.approx(ordered[100], rel=0.02)
        assert percentiles["p90"] == pytest.approx(ordered[180], rel=0.02)
        assert stat("OverheadLatency")["Sum"] == pytest.approx(30.0 * len(values))
        assert stat("Invocations")["Sum"] == len(values) + 1
        assert stat("InvocationsPerInstance")["Sum"] == pytest.approx((len(values) + 1) / 4)
        assert stat("Invocation5XXErrors")["Sum"] == 5 + 1  # 0, 50, 100, 150, 200; no answer
        assert stat("Invocation4XXErrors")["Sum"] == 4  # 40, 80, 120, 160
    finally:
        metrics.close()


def test_recording_is_cheap(tmp_path: Path) -> None:
    """Well under issue 15's 5 us per invocation, even on a loaded test machine."""
    recorder = InvocationMetrics(Settings.load({"data_dir": str(tmp_path)}, environ={}))
    calls = 20_000
    started = time.perf_counter()
    for _ in range(calls):
        recorder.record("ep", "AllTraffic", 2, 200, 0.000412, 0.000480)
    took = (time.perf_counter() - started) / calls
    recorder.close()
    assert took < 20e-6


def test_the_data_plane_process_records_too(tmp_path: Path) -> None:
    """``shipyard server`` as two processes: plain InvokeEndpoint is answered (and counted)
    by the data plane, which writes ``metrics.db`` beside the control plane."""
    srv = Server(tmp_path / "state")
    srv.env["SHIPYARD_RUNTIME"] = "process"
    srv.start()
    try:
        assert dataplane.read_info(srv.data_dir) is not None  # split: a data plane runs
        since = time.time()
        srv.sm.create_model(ModelName="split-model", ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": str(serve_project(tmp_path / "project"))})
        srv.sm.create_endpoint_config(EndpointConfigName="split-config", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "split-model",
            "InitialInstanceCount": 1, "InstanceType": "local"}])
        srv.sm.create_endpoint(EndpointName="split-ep", EndpointConfigName="split-config")
        srv.sm.get_waiter("endpoint_in_service").wait(
            EndpointName="split-ep", WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
        for i in range(7):
            srv.rt.invoke_endpoint(EndpointName="split-ep", Body=f"[{i}]".encode())
        cw = session(*load_or_create(srv.data_dir).default).client(
            "cloudwatch", endpoint_url=srv.url, config=Config(retries={"max_attempts": 1}))
        until("the data plane's points", lambda: _stats(
            cw, "split-ep", "Invocations", since).get("Sum") == 7 or None, timeout=20)
        assert _stats(cw, "split-ep", "ModelLatency", since)["SampleCount"] == 7
        srv.sm.delete_endpoint(EndpointName="split-ep")
        srv.kill(signal.SIGTERM)
    finally:
        if srv.running():
            srv.kill(signal.SIGKILL)
        stop_data_plane(srv.settings)
