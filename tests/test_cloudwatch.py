"""CloudWatch metrics: PutMetricData, GetMetricStatistics, GetMetricData and ListMetrics over
both wire protocols, jobs' MetricDefinitions series, retention, and the SageMaker SDK's
training analytics.

One API server in a thread over a control plane on the FakeRuntime (real supervisors, real
SQLite, scripted log lines) serves the module. Real boto3 clients drive it in each protocol
botocore speaks to CloudWatch: the installed botocore's own model (awsJson1.0), and the same
model with its protocol set to ``query`` (what botocore before 1.42.7 sends), loaded through
botocore's data path, so botocore's own serializers and parsers judge every request and
answer. The SDK runs in a process of its own with the environment ``client_env`` gives.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import botocore
import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from shipyard.api import cloudwatch
from shipyard.api.credentials import client_env
from shipyard.api.server import ServerInfo
from shipyard.cli.server import usage_env
from shipyard.control import ControlPlane
from shipyard.control.metrics import model, statistics
from shipyard.errors import ValidationError
from shipyard.runtimes import JOB_NAME_LABEL, FakeBehaviour
from shipyard.runtimes.base import ContainerSpec
from shipyard.settings import Settings
from tests.support.api import REGION, Api, serving
from tests.support.jobs import training_request
from tests.support.net import unused_port
from tests.support.planes import fake_plane
from tests.support.polling import until

PROTOCOLS = ("json", "query")
NOW = time.time()
#: An hour ago, at a five-minute boundary: where most tests put their points.
BASE = math.floor(NOW / 300) * 300 - 3600
LOSS = {"Name": "train:loss", "Regex": r"loss=([0-9.]+)"}
ACC = {"Name": "train:acc", "Regex": r"acc=([0-9.]+)"}

#: Job name -> what each of its containers prints (by host name).
SCRIPTS: dict[str, Callable[[str], FakeBehaviour]] = {}


def _handler(spec: ContainerSpec) -> FakeBehaviour:
    script = SCRIPTS.get(spec.labels.get(JOB_NAME_LABEL, ""))
    return script(spec.hostname or "") if script else FakeBehaviour()


def _query_model_session(akid: str, secret: str, models: Path) -> boto3.session.Session:
    """A boto3 session whose CloudWatch model says ``query``: what older botocore speaks."""
    source = Path(botocore.__file__).parent / "data/cloudwatch/2010-08-01/service-2.json.gz"
    document = json.loads(gzip.decompress(source.read_bytes()))
    document["metadata"]["protocol"] = "query"
    document["metadata"]["protocols"] = ["query"]
    folder = models / "cloudwatch" / "2010-08-01"
    folder.mkdir(parents=True)
    (folder / "service-2.json").write_text(json.dumps(document))
    core = botocore.session.get_session()
    core.get_component("data_loader").search_paths.insert(0, str(models))
    return boto3.session.Session(aws_access_key_id=akid, aws_secret_access_key=secret,
                                 region_name=REGION, botocore_session=core)


@dataclass
class Served:
    api: Api
    plane: ControlPlane
    tmp: Path
    clients: dict[str, Any]
    #: Clients that send what botocore's own checks would refuse (missing members).
    unchecked: dict[str, Any]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("cloudwatch")
    plane, _ = fake_plane(tmp, _handler, api_port=0)
    with serving(plane.settings, plane) as api:
        sessions = {"json": boto3.session.Session(aws_access_key_id=api.akid,
                                                  aws_secret_access_key=api.secret,
                                                  region_name=REGION),
                    "query": _query_model_session(api.akid, api.secret, tmp / "models")}
        checked = Config(retries={"max_attempts": 1})
        unchecked = Config(retries={"max_attempts": 1}, parameter_validation=False)
        yield Served(api, plane, tmp,
                     {p: s.client("cloudwatch", endpoint_url=api.url, config=checked)
                      for p, s in sessions.items()},
                     {p: s.client("cloudwatch", endpoint_url=api.url, config=unchecked)
                      for p, s in sessions.items()})


@pytest.fixture(params=PROTOCOLS)
def cw(request: pytest.FixtureRequest, served: Served) -> Any:
    return served.clients[request.param]


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def _ns(cw: Any, name: str) -> str:
    """A namespace of the test's own, per protocol (the module shares one server)."""
    return f"Test/{name}/{cw.meta.service_model.resolved_protocol}"


def _error(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return {**response["Error"], "Status": response["ResponseMetadata"]["HTTPStatusCode"],
            "Headers": response["ResponseMetadata"]["HTTPHeaders"]}


def _stats(cw: Any, namespace: str, name: str, start: float, end: float, period: int,
           **extra: Any) -> list[dict[str, Any]]:
    if "ExtendedStatistics" not in extra:
        extra.setdefault("Statistics", ["SampleCount", "Sum", "Minimum", "Maximum",
                                        "Average"])
    answer = cw.get_metric_statistics(Namespace=namespace, MetricName=name,
                                      StartTime=_at(start), EndTime=_at(end), Period=period,
                                      **extra)
    assert answer["Label"] == name
    return sorted(answer["Datapoints"], key=lambda d: (d["Timestamp"], d["Unit"]))


# -- pure parts -------------------------------------------------------------------------------
def test_percentile_is_the_weighted_nearest_rank() -> None:
    values = [(float(v), 1.0) for v in range(1, 101)]
    assert statistics.percentile(values, 50) == 50
    assert statistics.percentile(values, 99) == 99
    assert statistics.percentile(values, 99.5) == 100
    assert statistics.percentile(values, 0) == 1
    assert statistics.percentile([(1.0, 1.0), (2.0, 3.0)], 25) == 1
    assert statistics.percentile([(1.0, 1.0), (2.0, 3.0)], 26) == 2


@pytest.mark.parametrize(("start", "end", "period", "expected"), [
    (125.5, 305.0, 60, (120, 60, 3)),      # start and end to the minute
    (125.5, 305.0, 1, (125, 1, 180)),
    (127.0, 305.0, 5, (125, 5, 36)),       # to the period under a minute
    (120.0, 420.0, 300, (120, 300, 1)),    # a period covers whole, past the rounded end
    (120.0, 179.0, 60, (120, 60, 0)),
], ids=["minute", "second", "five", "whole", "empty"])
def test_periods_round_as_cloudwatch_rounds(start: float, end: float, period: int,
                                            expected: tuple[int, int, int]) -> None:
    span = model.window(start, end, period)
    assert (span.origin, span.period, span.count) == expected


# -- PutMetricData and GetMetricStatistics ------------------------------------------------------
def test_values_counts_and_statistic_sets_aggregate(cw: Any) -> None:
    ns = _ns(cw, "basic")
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "m", "Values": [1, 2, 3, 4], "Counts": [1, 1, 1, 2],
         "Timestamp": _at(BASE + 10), "StorageResolution": 1},
        {"MetricName": "m", "Value": 10, "Timestamp": _at(BASE + 20)},
        {"MetricName": "m", "StatisticValues": {"SampleCount": 2, "Sum": 10, "Minimum": 4,
                                                "Maximum": 6}, "Timestamp": _at(BASE + 30)},
        {"MetricName": "m", "Value": 7, "Timestamp": _at(BASE + 90)}])
    points = _stats(cw, ns, "m", BASE, BASE + 180, 60)
    assert points == [
        {"Timestamp": _at(BASE), "SampleCount": 8.0, "Sum": 34.0, "Minimum": 1.0,
         "Maximum": 10.0, "Average": 34.0 / 8, "Unit": "None"},
        {"Timestamp": _at(BASE + 60), "SampleCount": 1.0, "Sum": 7.0, "Minimum": 7.0,
         "Maximum": 7.0, "Average": 7.0, "Unit": "None"}]


def test_units_are_kept_apart_unless_one_is_asked_for(cw: Any) -> None:
    ns = _ns(cw, "units")
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "m", "Value": 1, "Unit": "Count", "Timestamp": _at(BASE)},
        {"MetricName": "m", "Value": 5, "Unit": "Seconds", "Timestamp": _at(BASE)}])
    both = _stats(cw, ns, "m", BASE, BASE + 60, 60, Statistics=["Sum"])
    assert [(p["Unit"], p["Sum"]) for p in both] == [("Count", 1.0), ("Seconds", 5.0)]
    counted = _stats(cw, ns, "m", BASE, BASE + 60, 60, Statistics=["Sum"], Unit="Count")
    assert [(p["Unit"], p["Sum"]) for p in counted] == [("Count", 1.0)]


def test_dimensions_name_a_metric_exactly(cw: Any) -> None:
    ns = _ns(cw, "dimensions")
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "m", "Value": 1, "Timestamp": _at(BASE),
         "Dimensions": [{"Name": "B", "Value": "2"}, {"Name": "A", "Value": "1"}]},
        {"MetricName": "m", "Value": 100, "Timestamp": _at(BASE)}])
    both = [{"Name": "A", "Value": "1"}, {"Name": "B", "Value": "2"}]
    assert [p["Sum"] for p in _stats(cw, ns, "m", BASE, BASE + 60, 60, Dimensions=both,
                                     Statistics=["Sum"])] == [1.0]
    assert [p["Sum"] for p in _stats(cw, ns, "m", BASE, BASE + 60, 60,
                                     Statistics=["Sum"])] == [100.0]
    assert _stats(cw, ns, "m", BASE, BASE + 60, 60, Dimensions=both[:1],
                  Statistics=["Sum"]) == []


@pytest.mark.parametrize(("period", "offset"), [(1, 0), (5, 0), (60, 0), (120, 60), (300, 0),
                                                (300, 60)],
                         ids=["1s-raw", "5s-raw", "60s-rollup", "120s", "300s-rollup",
                              "300s-minute-origin"])
def test_every_period_aggregates_the_raw_points(cw: Any, period: int, offset: int) -> None:
    ns = _ns(cw, f"periods-{period}-{offset}")
    stamps = [BASE + 3.5 + 17 * i for i in range(40)]
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "m", "Value": float(i), "Timestamp": _at(t), "StorageResolution": 1}
        for i, t in enumerate(stamps)])
    start, end = BASE + offset, BASE + 900
    expected: dict[int, list[float]] = {}
    for i, t in enumerate(stamps):
        if start <= t < end:
            expected.setdefault(int((t - start) // period), []).append(float(i))
    got = _stats(cw, ns, "m", start, end, period)
    assert [(p["Timestamp"], p["SampleCount"], p["Sum"], p["Minimum"], p["Maximum"])
            for p in got] == [
        (_at(start + k * period), float(len(v)), sum(v), min(v), max(v))
        for k, v in sorted(expected.items())]
    data = cw.get_metric_data(StartTime=_at(start), EndTime=_at(end), MetricDataQueries=[{
        "Id": "s", "MetricStat": {"Metric": {"Namespace": ns, "MetricName": "m"},
                                  "Period": period, "Stat": "Sum"}}],
        ScanBy="TimestampAscending")["MetricDataResults"][0]
    assert data["Values"] == [sum(v) for _, v in sorted(expected.items())]


def test_percentiles_come_from_raw_points(cw: Any) -> None:
    ns = _ns(cw, "percentiles")
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "lat", "Values": [float(v) for v in range(1, 101)],
         "Timestamp": _at(BASE)},
        {"MetricName": "set", "StatisticValues": {"SampleCount": 3, "Sum": 6, "Minimum": 1,
                                                  "Maximum": 3}, "Timestamp": _at(BASE)},
        {"MetricName": "one", "StatisticValues": {"SampleCount": 1, "Sum": 4, "Minimum": 4,
                                                  "Maximum": 4}, "Timestamp": _at(BASE)}])
    [point] = _stats(cw, ns, "lat", BASE, BASE + 60, 60,
                     ExtendedStatistics=["p50", "p99", "p99.5", "p100"])
    assert point["ExtendedStatistics"] == {"p50": 50.0, "p99": 99.0, "p99.5": 100.0,
                                           "p100": 100.0}
    # CloudWatch: a statistic set gives percentiles only when it is one value.
    [unknown] = _stats(cw, ns, "set", BASE, BASE + 60, 60,
                       ExtendedStatistics=["p50"])
    assert "ExtendedStatistics" not in unknown
    [one] = _stats(cw, ns, "one", BASE, BASE + 60, 60,
                   ExtendedStatistics=["p50"])
    assert one["ExtendedStatistics"] == {"p50": 4.0}


def test_standard_resolution_points_are_stored_at_their_minute(cw: Any) -> None:
    ns = _ns(cw, "resolution")
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "std", "Value": 1, "Timestamp": _at(BASE + 42)},
        {"MetricName": "high", "Value": 1, "Timestamp": _at(BASE + 42),
         "StorageResolution": 1}])
    assert [p["Timestamp"] for p in _stats(cw, ns, "std", BASE, BASE + 60, 1)] == [_at(BASE)]
    assert [p["Timestamp"] for p in _stats(cw, ns, "high", BASE, BASE + 60, 1)] == [
        _at(BASE + 42)]


def test_more_than_1440_datapoints_is_aws_error(cw: Any) -> None:
    error = _error(lambda: _stats(cw, "Test/any", "m", BASE, BASE + 1441, 1))
    assert error["Code"] == "InvalidParameterCombination" and error["Status"] == 400
    assert error["Message"] == (
        "You have requested up to 1441 datapoints, which exceeds the limit of 1440. You may "
        "reduce the datapoints requested by increasing Period, or decreasing the time range.")
    assert _stats(cw, "Test/any", "m", BASE, BASE + 1440, 1) == []
    if cw.meta.service_model.resolved_protocol == "json":
        assert error["Headers"]["x-amzn-query-error"] == "InvalidParameterCombination;Sender"
        assert error["QueryErrorCode"] == "InvalidParameterCombinationException"


def _datum(**extra: Any) -> dict[str, Any]:
    return {"MetricName": "m", "Timestamp": _at(NOW), **extra}


@pytest.mark.parametrize(("namespace", "data", "code"), [
    ("AWS/EC2", [_datum(Value=1)], "InvalidParameterValue"),
    ("T", [_datum(Value=1, Values=[1.0])], "InvalidParameterCombination"),
    ("T", [_datum(Value=1, StatisticValues={"SampleCount": 1, "Sum": 1, "Minimum": 1,
                                            "Maximum": 1})], "InvalidParameterCombination"),
    ("T", [_datum(Values=[1.0, 2.0], Counts=[1.0])], "InvalidParameterValue"),
    ("T", [_datum(Values=[1.0] * 151)], "InvalidParameterValue"),
    ("T", [_datum(Value=float("nan"))], "InvalidParameterValue"),
    ("T", [_datum(Value=float("inf"))], "InvalidParameterValue"),
    ("T", [_datum(Value=2.0 ** 361)], "InvalidParameterValue"),
    ("T", [_datum(Value=1, Timestamp=_at(NOW - 15 * 86400))], "InvalidParameterValue"),
    ("T", [_datum(Value=1, Timestamp=_at(NOW + 3 * 3600))], "InvalidParameterValue"),
    ("T", [_datum(Value=1, StorageResolution=5)], "InvalidParameterValue"),
    ("T", [_datum(StatisticValues={"SampleCount": 2, "Sum": 1, "Minimum": 3,
                                   "Maximum": 1})], "InvalidParameterValue"),
    ("T", [_datum(Value=1, Dimensions=[{"Name": "a", "Value": "1"},
                                       {"Name": "a", "Value": "2"}])],
     "InvalidParameterValue"),
    ("T", [_datum()], "MissingParameter"),
    ("T", [_datum(Value=1)] * 1001, "InvalidParameterValue"),
    ("T", [_datum(Value=1, MetricName="x" * 256)], "ValidationError"),
], ids=["reserved-namespace", "value-and-values", "value-and-set", "counts-size",
        "151-values", "nan", "infinity", "too-big", "too-old", "too-new", "resolution",
        "min-over-max", "duplicate-dimension", "no-value", "1001-datums", "long-name"])
def test_bad_metric_data_is_refused_in_cloudwatch_words(served: Served, namespace: str,
                                                        data: list[dict[str, Any]],
                                                        code: str) -> None:
    for protocol in PROTOCOLS:
        client = served.unchecked[protocol]
        error = _error(lambda c=client: c.put_metric_data(Namespace=namespace,
                                                           MetricData=data))
        assert (error["Code"], error["Status"]) == (code, 400), (protocol, error)


@pytest.mark.parametrize(("changes", "code", "words"), [
    ({"Period": 7}, "InvalidParameterValue", "Period must be 1, 5, 10, 20, 30"),
    ({"EndTime": _at(BASE)}, "InvalidParameterValue", "StartTime must be less than"),
    ({"Statistics": None}, "InvalidParameterCombination",
     "Must specify either Statistics or ExtendedStatistics."),
    ({"ExtendedStatistics": ["p99"]}, "InvalidParameterCombination", "but not both"),
    ({"Statistics": None, "ExtendedStatistics": ["tm99"]}, "InvalidParameterValue",
     "not supported"),
    ({"Statistics": None, "ExtendedStatistics": ["p101"]}, "InvalidParameterValue",
     "not a valid statistic"),
    ({"Period": None}, "MissingParameter", "The parameter Period is required."),
    ({"Namespace": None}, "MissingParameter", "The parameter Namespace is required."),
], ids=["period", "times", "no-statistics", "both", "trimmed-mean", "p101", "no-period",
        "no-namespace"])
def test_bad_statistics_requests_are_refused(served: Served, changes: dict[str, Any],
                                             code: str, words: str) -> None:
    request = {"Namespace": "T", "MetricName": "m", "StartTime": _at(BASE),
               "EndTime": _at(BASE + 600), "Period": 60, "Statistics": ["Sum"], **changes}
    request = {k: v for k, v in request.items() if v is not None}
    for protocol in PROTOCOLS:
        client = served.unchecked[protocol]
        error = _error(lambda c=client: c.get_metric_statistics(**request))
        assert (error["Code"], error["Status"]) == (code, 400), (protocol, error)
        assert words in error["Message"]


def test_big_put_metric_data_comes_gzipped_and_over_one_megabyte_is_refused(
        served: Served) -> None:
    # botocore gzips PutMetricData bodies over 10 KB: both protocols read them.
    many = [_datum(Value=float(i), MetricName=f"m{i}", Timestamp=_at(BASE))
            for i in range(1000)]
    for protocol, client in served.clients.items():
        client.put_metric_data(Namespace=f"Test/gzip/{protocol}", MetricData=many)
        listed = client.list_metrics(Namespace=f"Test/gzip/{protocol}")["Metrics"]
        assert len(listed) == 500, protocol
    plain = boto3.session.Session(
        aws_access_key_id=served.api.akid, aws_secret_access_key=served.api.secret,
        region_name=REGION).client("cloudwatch", endpoint_url=served.api.url, config=Config(
            retries={"max_attempts": 1}, disable_request_compression=True))
    big = [_datum(Value=1, Dimensions=[{"Name": f"d{i}", "Value": "v" * 1024}
                                       for i in range(30)])] * 40
    error = _error(lambda: plain.put_metric_data(Namespace="T", MetricData=big))
    assert (error["Code"], error["Status"]) == ("RequestEntityTooLarge", 413)


# -- GetMetricData ------------------------------------------------------------------------------
def _metric(ns: str, name: str) -> dict[str, Any]:
    return {"Namespace": ns, "MetricName": name}


def test_metric_data_queries_labels_and_order(cw: Any) -> None:
    ns = _ns(cw, "data")
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "m", "Values": [float(i), float(10 * i)], "StorageResolution": 1,
         "Timestamp": _at(BASE + 60 * i)} for i in range(3)])
    queries = [
        {"Id": "avg", "MetricStat": {"Metric": _metric(ns, "m"), "Period": 60,
                                     "Stat": "Average"}},
        {"Id": "p_hi", "Label": "the top", "MetricStat": {"Metric": _metric(ns, "m"),
                                                          "Period": 60, "Stat": "p100"}},
        {"Id": "hidden", "ReturnData": False, "MetricStat": {"Metric": _metric(ns, "m"),
                                                             "Period": 60, "Stat": "Sum"}},
        {"Id": "none", "MetricStat": {"Metric": _metric(ns, "absent"), "Period": 60,
                                      "Stat": "Sum"}}]
    answer = cw.get_metric_data(MetricDataQueries=queries, StartTime=_at(BASE),
                                EndTime=_at(BASE + 600))
    results = {r["Id"]: r for r in answer["MetricDataResults"]}
    assert list(results) == ["avg", "p_hi", "none"]
    assert results["avg"]["Label"] == "m" and results["p_hi"]["Label"] == "the top"
    # TimestampDescending is the default.
    assert results["avg"]["Timestamps"] == [_at(BASE + 120), _at(BASE + 60), _at(BASE)]
    assert results["avg"]["Values"] == [11.0, 5.5, 0.0]
    assert results["p_hi"]["Values"] == [20.0, 10.0, 0.0]
    assert results["none"] == {"Id": "none", "Label": "absent", "Timestamps": [],
                               "Values": [], "StatusCode": "Complete", "Messages": []}
    ascending = cw.get_metric_data(MetricDataQueries=queries[:1], StartTime=_at(BASE),
                                   EndTime=_at(BASE + 600), ScanBy="TimestampAscending")
    assert ascending["MetricDataResults"][0]["Values"] == [0.0, 5.5, 11.0]


def test_metric_data_pages_by_max_datapoints(cw: Any) -> None:
    ns = _ns(cw, "paging")
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": name, "Value": float(i), "StorageResolution": 1,
         "Timestamp": _at(BASE + i)} for name in ("a", "b") for i in range(10)])
    queries = [{"Id": name, "MetricStat": {"Metric": _metric(ns, name), "Period": 1,
                                           "Stat": "Sum"}} for name in ("a", "b")]
    window = {"StartTime": _at(BASE), "EndTime": _at(BASE + 60)}
    first = cw.get_metric_data(MetricDataQueries=queries, MaxDatapoints=7, **window)
    assert [(r["Id"], len(r["Values"]), r["StatusCode"])
            for r in first["MetricDataResults"]] == [("a", 7, "PartialData")]
    pages = list(cw.get_paginator("get_metric_data").paginate(
        MetricDataQueries=queries, PaginationConfig={"PageSize": 7}, **window))
    assert len(pages) == 3
    joined: dict[str, list[float]] = {}
    for page in pages:
        for result in page["MetricDataResults"]:
            joined.setdefault(result["Id"], []).extend(result["Values"])
    assert joined == {"a": [float(i) for i in range(9, -1, -1)],
                      "b": [float(i) for i in range(9, -1, -1)]}
    other = {**window, "EndTime": _at(BASE + 120)}
    error = _error(lambda: cw.get_metric_data(MetricDataQueries=queries, MaxDatapoints=7,
                                              NextToken=first["NextToken"], **other))
    assert (error["Code"], error["Status"]) == ("InvalidNextToken", 400)


@pytest.mark.parametrize(("query", "words"), [
    ({"Id": "e", "Expression": "SUM(METRICS())"}, "Expression is not supported"),
    ({"Id": "e", "Expression": 'SELECT AVG(x) FROM "ns"'}, "Expression is not supported"),
    ({"Id": "Bad", "MetricStat": {"Metric": {"Namespace": "n", "MetricName": "m"},
                                  "Period": 60, "Stat": "Sum"}}, "must start with a lowercase"),
    ({"Id": "e", "MetricStat": {"Metric": {"Namespace": "n", "MetricName": "m"},
                                "Period": 60, "Stat": "IQM"}}, "not supported by Shipyard"),
    ({"Id": "e"}, "MetricStat is required"),
], ids=["math", "insights", "id", "iqm", "nothing"])
def test_what_shipyard_cannot_answer_is_a_clear_validation_error(
        served: Served, query: dict[str, Any], words: str) -> None:
    for protocol in PROTOCOLS:
        client = served.unchecked[protocol]
        error = _error(lambda c=client: c.get_metric_data(
            MetricDataQueries=[query], StartTime=_at(BASE), EndTime=_at(BASE + 60)))
        assert (error["Code"], error["Status"]) == ("ValidationError", 400), protocol
        assert words in error["Message"]


# -- ListMetrics --------------------------------------------------------------------------------
def test_list_metrics_filters(cw: Any) -> None:
    ns = _ns(cw, "list")
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "a", "Value": 1, "Dimensions": [{"Name": "Host", "Value": "h1"}]},
        {"MetricName": "a", "Value": 1, "Dimensions": [{"Name": "Host", "Value": "h2"},
                                                       {"Name": "Disk", "Value": "d"}]},
        {"MetricName": "b", "Value": 1}])

    def listed(**filters: Any) -> list[tuple[str, list[tuple[str, str]]]]:
        metrics = cw.list_metrics(Namespace=ns, **filters)["Metrics"]
        return [(m["MetricName"], [(d["Name"], d["Value"]) for d in m["Dimensions"]])
                for m in metrics]

    assert listed() == [("a", [("Disk", "d"), ("Host", "h2")]), ("a", [("Host", "h1")]),
                        ("b", [])]
    assert listed(MetricName="b") == [("b", [])]
    assert listed(Dimensions=[{"Name": "Host"}]) == listed(MetricName="a")
    assert listed(Dimensions=[{"Name": "Host", "Value": "h1"}]) == [("a", [("Host", "h1")])]
    assert listed(Dimensions=[{"Name": "Disk"}, {"Name": "Host"}]) == [
        ("a", [("Disk", "d"), ("Host", "h2")])]
    assert len(listed(RecentlyActive="PT3H")) == 3


def test_list_metrics_pages_500_at_a_time(cw: Any) -> None:
    ns = _ns(cw, "many")
    cw.put_metric_data(Namespace=ns, MetricData=[{"MetricName": f"m{i:04d}", "Value": 1}
                                                 for i in range(501)])
    first = cw.list_metrics(Namespace=ns)
    assert len(first["Metrics"]) == 500 and "NextToken" in first
    names = [m["MetricName"] for page in cw.get_paginator("list_metrics").paginate(
        Namespace=ns) for m in page["Metrics"]]
    assert names == [f"m{i:04d}" for i in range(501)]
    error = _error(lambda: cw.list_metrics(Namespace="other", NextToken=first["NextToken"]))
    assert error["Code"] == "InvalidParameterValue"


# -- wire details -------------------------------------------------------------------------------
def test_an_operation_shipyard_lacks_is_named(cw: Any) -> None:
    error = _error(lambda: cw.delete_alarms(AlarmNames=["x"]))
    expected = ("UnknownOperationException" if cw.meta.service_model.resolved_protocol
                == "json" else "InvalidAction")
    assert error["Code"] == expected and "cloudwatch:DeleteAlarms" in error["Message"]


def _signed(api: Api, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str],
                                                                       bytes]:
    request = AWSRequest(method="POST", url=f"{api.url}/", data=body, headers=headers)
    SigV4Auth(Credentials(api.akid, api.secret), cloudwatch.SIGNING_NAME,
              REGION).add_auth(request)
    prepared = urllib.request.Request(f"{api.url}/", data=body, method="POST",
                                      headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(prepared, timeout=30) as response:
            return (response.status, {k.lower(): v for k, v in response.headers.items()},
                    response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def test_query_answers_are_cloudwatch_documents(served: Served) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    status, headers, body = _signed(served.api, b"Action=ListMetrics&Version=2010-08-01"
                                    b"&Namespace=Nothing", form)
    assert status == 200 and headers["content-type"] == "text/xml"
    assert body.startswith(f'<ListMetricsResponse xmlns="{cloudwatch.NAMESPACE}">'.encode())
    status, headers, body = _signed(served.api, b"Action=GetMetricStatistics&Version="
                                    b"2010-08-01&Namespace=N&MetricName=m", form)
    assert status == 400 and b"<Code>MissingParameter</Code>" in body
    assert cloudwatch.NAMESPACE.encode() in body and "x-amzn-query-error" not in headers


def test_json_errors_carry_the_model_shape_and_the_query_code(served: Served) -> None:
    status, headers, body = _signed(
        served.api, json.dumps({"Namespace": "AWS/X", "MetricData": [
            {"MetricName": "m", "Value": 1}]}).encode(),
        {"Content-Type": "application/x-amz-json-1.0",
         "X-Amz-Target": f"{cloudwatch.TARGET_PREFIX}.PutMetricData"})
    assert status == 400 and headers["content-type"] == "application/x-amz-json-1.0"
    assert json.loads(body)["__type"] == "InvalidParameterValueException"
    assert headers["x-amzn-query-error"] == "InvalidParameterValue;Sender"


def test_the_exported_environment_names_cloudwatch(served: Served) -> None:
    env = client_env(served.api.akid, served.api.secret, served.api.url, REGION)
    assert env["AWS_ENDPOINT_URL_CLOUDWATCH"] == served.api.url
    # What `shipyard server status` prints.
    printed = usage_env(served.plane.settings, ServerInfo(served.api.url, os.getpid()))
    assert printed["AWS_ENDPOINT_URL_CLOUDWATCH"] == served.api.url


# -- jobs' series -------------------------------------------------------------------------------
def _run_job(served: Served, name: str, hosts: int, script: Callable[[str], FakeBehaviour],
             wait: bool = True) -> None:
    SCRIPTS[name] = script
    served.api.sm.create_training_job(**training_request(
        name, served.tmp / name, instance_count=hosts,
        AlgorithmSpecification={"TrainingImage": "example/train:1",
                                "TrainingInputMode": "File",
                                "MetricDefinitions": [LOSS, ACC]}))
    if wait:
        served.plane.wait("training", name, timeout=30)


def _lines(host: str) -> FakeBehaviour:
    step = int(host.rsplit("-", 1)[1])
    return FakeBehaviour(logs=tuple(f"epoch={i} loss={(i + 1) * step} acc=0.{i}"
                                    for i in range(5)))


def test_training_series_are_metrics_per_job_and_per_host(served: Served) -> None:
    _run_job(served, "cw-hosts", 2, _lines)
    series = served.plane.metric_series("training", "cw-hosts")
    start, end = min(p["Timestamp"] for p in series), max(p["Timestamp"] for p in series)
    span = {"StartTime": _at(start - 60), "EndTime": _at(end + 120), "Period": 300,
            "Statistics": ["SampleCount", "Sum"]}
    for cw in served.clients.values():
        ns = "/aws/sagemaker/TrainingJobs"
        whole = cw.get_metric_statistics(Namespace=ns, MetricName="train:loss", Dimensions=[
            {"Name": "TrainingJobName", "Value": "cw-hosts"}], **span)["Datapoints"]
        assert sum(p["SampleCount"] for p in whole) == 10
        assert sum(p["Sum"] for p in whole) == 15 + 30
        host = cw.get_metric_statistics(Namespace=ns, MetricName="train:loss", Dimensions=[
            {"Name": "Host", "Value": "cw-hosts/algo-2"}], **span)["Datapoints"]
        assert sum(p["Sum"] for p in host) == 30
        listed = cw.list_metrics(Namespace=ns, Dimensions=[
            {"Name": "TrainingJobName", "Value": "cw-hosts"}])["Metrics"]
        assert sorted(m["MetricName"] for m in listed) == ["train:acc", "train:loss"]
        hosts = cw.list_metrics(Namespace=ns, MetricName="train:acc",
                                Dimensions=[{"Name": "Host"}])["Metrics"]
        assert {m["Dimensions"][0]["Value"] for m in hosts} >= {"cw-hosts/algo-1",
                                                                 "cw-hosts/algo-2"}


def test_processing_series_are_in_their_namespace(served: Served) -> None:
    # Processing jobs take no MetricDefinitions on AWS; a series stored for one is shown
    # under its own namespace and dimension all the same.
    served.plane.ctx.store.add_metrics("processing", "cw-proc", "algo-1",
                                       [("rows", BASE + 1, 3.0), ("rows", BASE + 2, 5.0)])
    for cw in served.clients.values():
        [point] = cw.get_metric_statistics(
            Namespace="/aws/sagemaker/ProcessingJobs", MetricName="rows",
            Dimensions=[{"Name": "ProcessingJobName", "Value": "cw-proc"}],
            StartTime=_at(BASE), EndTime=_at(BASE + 60), Period=60,
            Statistics=["Maximum"])["Datapoints"]
        assert point["Maximum"] == 5.0 and point["Unit"] == "None"


def _sdk_env(served: Served, tmp: Path) -> dict[str, str]:
    config = tmp / "sagemaker-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n"
                      "      TelemetryOptOut: true\n")
    dead = f"http://127.0.0.1:{unused_port()}"
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp),
        **client_env(served.api.akid, served.api.secret, served.api.url, REGION),
        "AWS_CONFIG_FILE": str(tmp / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        # Tripwire: a request for any host but this machine fails at once.
        "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "NO_PROXY": "127.0.0.1,localhost",
    }


def _minute_averages(served: Served, name: str) -> list[dict[str, Any]]:
    """What ``TrainingJobAnalytics(name).dataframe()`` should hold: per metric, the average
    of each minute's points, timed from the first minute."""
    rows = []
    for metric in (LOSS["Name"], ACC["Name"]):
        minutes: dict[int, list[float]] = {}
        for point in served.plane.metric_series("training", name, metric):
            minutes.setdefault(int(point["Timestamp"] // 60), []).append(point["Value"])
        first = min(minutes)
        rows += [{"timestamp": float((m - first) * 60), "metric_name": metric,
                  "value": sum(v) / len(v)} for m, v in sorted(minutes.items())]
    return rows


def test_sdk_training_job_analytics_after_and_during_a_job(served: Served,
                                                          tmp_path: Path) -> None:
    pytest.importorskip("sagemaker")
    _run_job(served, "cw-sdk-done", 1, _lines)
    _run_job(served, "cw-sdk-running", 1, lambda host: FakeBehaviour(
        logs=("loss=0.5 acc=0.1", "loss=0.25 acc=0.2"), duration=None), wait=False)
    try:
        until("the running job's metrics", lambda: len(served.plane.metric_series(
            "training", "cw-sdk-running")) == 4, timeout=30)
        code = """if True:
            import json, sys
            from sagemaker.analytics import TrainingJobAnalytics
            print(json.dumps({name: TrainingJobAnalytics(name).dataframe().to_dict("records")
                              for name in sys.argv[1:]}))
        """
        done = subprocess.run([sys.executable, "-c", code, "cw-sdk-done", "cw-sdk-running"],
                              env=_sdk_env(served, tmp_path), capture_output=True, text=True,
                              timeout=180, check=False)
        assert done.returncode == 0, done.stderr
        frames = json.loads(done.stdout.strip().splitlines()[-1])
        for name in ("cw-sdk-done", "cw-sdk-running"):
            expected = [{**row, "value": pytest.approx(row["value"])}
                        for row in _minute_averages(served, name)]
            assert frames[name] == expected, name
    finally:
        served.plane.stop("training", "cw-sdk-running")


# -- retention ----------------------------------------------------------------------------------
def test_retention_drops_old_points_and_raw_points_first(tmp_path: Path) -> None:
    plane, _ = fake_plane(tmp_path, metrics_retention_days=1, metrics_raw_retention_days=0.5)
    try:
        old, middle, recent = NOW - 2 * 86400, NOW - 20 * 3600, NOW - 3600
        plane.put_metric_data({"Namespace": "R", "MetricData": [
            {"MetricName": "m", "Value": v, "Timestamp": t, "StorageResolution": 1}
            for v, t in ((1.0, old), (2.0, middle), (3.0, recent))]})

        def stats(start: float, end: float, period: int, **asked: Any) -> list[Any]:
            return plane.get_metric_statistics({
                "Namespace": "R", "MetricName": "m", "StartTime": start, "EndTime": end,
                "Period": period, **asked})["Datapoints"]

        everything = stats(NOW - 3 * 86400, NOW + 300, 300, Statistics=["Sum"])
        assert [p["Sum"] for p in everything] == [2.0, 3.0]
        percentiles = stats(NOW - 3 * 86400, NOW + 300, 300, ExtendedStatistics=["p50"])
        assert [p.get("ExtendedStatistics") for p in percentiles] == [None, {"p50": 3.0}]
        # Periods under a minute need raw points: gone for the middle one.
        assert stats(middle - 600, middle + 600, 1, Statistics=["Sum"]) == []
        assert [p["Sum"] for p in stats(recent - 600, recent + 600, 1,
                                        Statistics=["Sum"])] == [3.0]
        assert [m["MetricName"] for m in plane.list_metrics({})["Metrics"]] == ["m"]
    finally:
        plane.close()


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "soon"])
def test_retention_settings_must_be_positive_days(tmp_path: Path, raw: str) -> None:
    with pytest.raises(ValidationError, match="metrics_retention_days"):
        Settings.load({"data_dir": str(tmp_path)},
                      environ={"SHIPYARD_METRICS_RETENTION_DAYS": raw})
