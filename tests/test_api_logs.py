"""CloudWatch Logs read side and STS GetCallerIdentity, against jobs a real control plane ran.

The jobs run on the FakeRuntime (scripted log lines, real supervisors, real log files). The
handlers are exercised directly and through real boto3 clients talking to a tiny test-only
ASGI app served by uvicorn on 127.0.0.1:0, so botocore's own serializers, parsers, paginators
and error factory judge every response. The SDK v2 log-tailing loop is reproduced as written
in sagemaker-python-sdk (``session.py`` ``_flush_log_streams``, ``logs.py``
``log_stream``/``multi_stream_iter``) and must end with every line exactly once.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.parsers
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from shipyard.api import logs, sts
from shipyard.api.logs import MAX_RESPONSE_BYTES
from shipyard.control import ControlPlane
from shipyard.errors import InvalidParameter, LogsResourceNotFound, ShipyardError
from shipyard.runtimes import (
    HOST_LABEL,
    JOB_NAME_LABEL,
    FakeBehaviour,
    FakeRuntime,
)
from shipyard.runtimes.base import ContainerSpec, LogLine
from shipyard.settings import Settings
from tests.support.asgi import read_body, serve_in_thread
from tests.support.jobs import training_request

IMAGE = "example/logs:1"
TRAINING = "/aws/sagemaker/TrainingJobs"
PROCESSING = "/aws/sagemaker/ProcessingJobs"
ACCOUNT = "123456789012"
ACCESS_KEY = "AKIDSHIPYARDTEST"
BIG_LINE = 100_000
#: Crafted timestamps for the time-filter job start an hour from now, after every real event.
BASE_MS = (int(time.time()) + 3600) * 1000


def _script(job: str, host: str) -> tuple[str, ...]:
    if job == "multi":
        return tuple(f"{host} line {i}" for i in range(40))
    if job == "multi-2":
        return ("other job",)
    if job == "single":
        return tuple(f"n {i}" for i in range(12_000))
    if job == "big":
        return tuple(f"{i:02d}" + "x" * BIG_LINE for i in range(25))
    if job == "proc":
        return tuple(f"proc {host} {i}" for i in range(5))
    return ()


def _behaviour(spec: ContainerSpec) -> FakeBehaviour:
    job, host = spec.labels[JOB_NAME_LABEL], spec.labels[HOST_LABEL]
    if job == "live":
        return FakeBehaviour(duration=None)
    return FakeBehaviour(logs=_script(job, host))


def _training(name: str, tmp: Path, hosts: int = 1) -> dict[str, Any]:
    return training_request(name, tmp, image=IMAGE, instance_count=hosts,
                            role=f"arn:aws:iam::{ACCOUNT}:role/shipyard")


def _processing(name: str, tmp: Path, hosts: int) -> dict[str, Any]:
    (tmp / "in").mkdir(exist_ok=True)
    (tmp / "in" / "x.txt").write_text("x")
    return {
        "ProcessingJobName": name,
        "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/shipyard",
        "AppSpecification": {"ImageUri": IMAGE, "ContainerEntrypoint": ["python3", "p.py"]},
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.large",
                                                  "InstanceCount": hosts, "VolumeSizeInGB": 5}},
        "ProcessingInputs": [{"InputName": "a", "S3Input": {
            "S3Uri": (tmp / "in").as_uri(), "LocalPath": "/opt/ml/processing/input/a",
            "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "result", "S3Output": {
            "S3Uri": (tmp / "result").as_uri(), "LocalPath": "/opt/ml/processing/output",
            "S3UploadMode": "EndOfJob"}}]},
    }


@dataclass
class World:
    plane: ControlPlane
    runtime: FakeRuntime

    def epoch(self, kind: str, job: str) -> int:
        record = self.plane.ctx.store.get_job(kind, job).record
        field = "TrainingStartTime" if kind == "training" else "ProcessingStartTime"
        return int(record[field])

    def stream(self, job: str, host: str = "algo-1", kind: str = "training") -> str:
        return f"{job}/{host}-{self.epoch(kind, job)}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("logs")
    runtime = FakeRuntime(_behaviour, images=[IMAGE])
    settings = Settings.load({"data_dir": str(tmp / "state"), "account_id": ACCOUNT,
                              "stop_grace_seconds": 0.3}, environ={})
    plane = ControlPlane(settings, runtime)
    jobs = [("multi", 3), ("multi-2", 1), ("single", 1), ("big", 1), ("timed", 1),
            ("quiet", 1)]
    for name, hosts in jobs:
        plane.create("training", _training(name, tmp, hosts))
    plane.create("processing", _processing("proc", tmp, 2))
    for name, _ in jobs:
        assert plane.wait("training", name, timeout=60)["TrainingJobStatus"] == "Completed"
    assert plane.wait("processing", "proc", timeout=60)["ProcessingJobStatus"] == "Completed"
    # Crafted timestamps: one event a second, then three sharing one millisecond.
    ns = [(BASE_MS + i * 1000) * 1_000_000 for i in range(10)]
    ns += [(BASE_MS + 20_000) * 1_000_000] * 3
    texts = [f"t{i}" for i in range(10)] + ["same a", "same b", "same c"]
    plane.ctx.logs.append("training", "timed", "algo-1",
                          [LogLine(timestamp_ns=n, text=t) for n, t in zip(ns, texts, strict=True)])
    yield World(plane, runtime)
    plane.close()


# -- a tiny ASGI app: X-Amz-Target routing and the two error envelopes -------------------------
class LogsApp:
    """Test-only stand-in for the API server: no signature checks, just routing."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        target = headers.get("x-amz-target", "")
        if not target:
            await self._sts(send, headers, body)
            return
        operation = target.removeprefix("Logs_20140328.")
        try:
            result = logs.HANDLERS[operation](self.plane, json.loads(body or b"{}"))
            status, payload = 200, json.dumps(result).encode()
        except ShipyardError as exc:
            status = exc.http_status
            payload = json.dumps({"__type": exc.code, "message": exc.message}).encode()
        await _send(send, status, payload, b"application/x-amz-json-1.1")

    async def _sts(self, send: Any, headers: dict[str, str], body: bytes) -> None:
        params = sts.parse_query_body(body)
        if params.get("Action") != "GetCallerIdentity":
            payload = sts.query_error("InvalidAction", f"Could not find operation "
                                      f"{params.get('Action')} for version "
                                      f"{params.get('Version')}", 400, "rid-error")
            await _send(send, 400, payload, b"text/xml")
            return
        credential = headers["authorization"].split("Credential=")[1].split("/")[0]
        payload = sts.get_caller_identity(self.plane.settings.account_id, credential, "rid-1")
        await _send(send, 200, payload, b"text/xml")


async def _send(send: Any, status: int, payload: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture(scope="module")
def endpoint(world: World) -> Iterator[str]:
    with serve_in_thread(LogsApp(world.plane), lifespan="on") as url:
        yield url


def _client(endpoint: str, service: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key="secret",
                        config=Config(retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def client(endpoint: str) -> Any:
    return _client(endpoint, "logs")


def _error(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call()
    error = info.value.response["Error"]
    return error["Code"], error["Message"]


def _pages(pages: Iterator[dict[str, Any]], most: int = 200) -> list[dict[str, Any]]:
    """A paginator's pages; a token that never ends fails instead of hanging."""
    seen = []
    for page in pages:
        seen.append(page)
        assert len(seen) <= most, "nextToken never went away"
    return seen


# -- DescribeLogStreams -----------------------------------------------------------------------
def test_streams_of_a_multi_host_job(world: World, client: Any) -> None:
    direct = logs.describe_log_streams(world.plane, {"logGroupName": TRAINING,
                                                     "logStreamNamePrefix": "multi/"})
    names = [s["logStreamName"] for s in direct["logStreams"]]
    assert names == [world.stream("multi", f"algo-{n}") for n in (1, 2, 3)]
    assert "nextToken" not in direct
    wire = client.describe_log_streams(logGroupName=TRAINING, logStreamNamePrefix="multi/",
                                       orderBy="LogStreamName", limit=3)
    assert [s["logStreamName"] for s in wire["logStreams"]] == names
    assert "nextToken" not in wire  # exactly full, and nothing after it
    first = wire["logStreams"][0]
    assert first["arn"] == (f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:{TRAINING}"
                            f":log-stream:{names[0]}")
    assert first["storedBytes"] == 0
    assert first["creationTime"] // 1000 == world.epoch("training", "multi")
    assert first["firstEventTimestamp"] <= first["lastEventTimestamp"]
    assert first["lastIngestionTime"] >= first["lastEventTimestamp"]
    assert first["firstEventTimestamp"] >= first["creationTime"] - 1000


def test_stream_without_events_and_processing_group(world: World, client: Any) -> None:
    quiet = client.describe_log_streams(logGroupName=TRAINING, logStreamNamePrefix="quiet/")
    (stream,) = quiet["logStreams"]
    assert stream["logStreamName"] == world.stream("quiet")
    assert "firstEventTimestamp" not in stream and "lastEventTimestamp" not in stream
    proc = client.describe_log_streams(logGroupName=PROCESSING, logStreamNamePrefix="proc/")
    assert [s["logStreamName"] for s in proc["logStreams"]] == [
        world.stream("proc", f"algo-{n}", kind="processing") for n in (1, 2)]
    missing = client.describe_log_streams(logGroupName=TRAINING, logStreamNamePrefix="nope/")
    assert missing["logStreams"] == [] and "nextToken" not in missing


def test_prefix_without_slash_spans_jobs(world: World) -> None:
    result = logs.describe_log_streams(world.plane, {"logGroupName": TRAINING,
                                                     "logStreamNamePrefix": "multi"})
    assert [s["logStreamName"] for s in result["logStreams"]] == [
        *(world.stream("multi", f"algo-{n}") for n in (1, 2, 3)), world.stream("multi-2")]
    down = logs.describe_log_streams(world.plane, {"logGroupName": TRAINING, "descending": True,
                                                   "logStreamNamePrefix": "multi"})
    assert down["logStreams"] == result["logStreams"][::-1]


def _all_training_streams(world: World) -> list[str]:
    jobs = [row.name for row in world.plane.ctx.store.list_jobs("training")]
    assert {"big", "multi", "multi-2", "quiet", "single", "timed"} <= set(jobs)
    return sorted(f"{job}/{host}-{world.epoch('training', job)}" for job in jobs
                  for host in world.plane.ctx.logs.hosts("training", job))


@pytest.mark.parametrize("page_size", [1, 2, 3, 50], ids=lambda n: f"limit{n}")
def test_paging_every_stream_once(world: World, client: Any, page_size: int) -> None:
    pages = _pages(client.get_paginator("describe_log_streams").paginate(
        logGroupName=TRAINING, PaginationConfig={"PageSize": page_size}))
    names = [s["logStreamName"] for page in pages for s in page["logStreams"]]
    expected = _all_training_streams(world)
    assert sorted(names) == expected
    assert len(names) == len(set(names)) >= 8
    assert all(len(page["logStreams"]) == page_size for page in pages[:-1])
    assert "nextToken" not in pages[-1]
    assert len(pages) == -(-len(expected) // page_size)


def test_paging_within_one_job(world: World) -> None:
    params = {"logGroupName": TRAINING, "logStreamNamePrefix": "multi/", "limit": 2}
    first = logs.describe_log_streams(world.plane, params)
    assert len(first["logStreams"]) == 2 and first["nextToken"]
    second = logs.describe_log_streams(world.plane, {**params, "nextToken": first["nextToken"]})
    assert [s["logStreamName"] for s in second["logStreams"]] == [world.stream("multi", "algo-3")]
    assert "nextToken" not in second
    # A token is bound to the request it continues.
    with pytest.raises(InvalidParameter, match="nextToken is invalid"):
        logs.describe_log_streams(world.plane, {**params, "logStreamNamePrefix": "single/",
                                                "nextToken": first["nextToken"]})


def test_order_by_last_event_time(world: World, client: Any) -> None:
    result = client.describe_log_streams(logGroupName=TRAINING, orderBy="LastEventTime",
                                         descending=True)
    streams = result["logStreams"]
    assert sorted(s["logStreamName"] for s in streams) == _all_training_streams(world)
    stored = [s["lastIngestionTime"] for s in streams if "lastIngestionTime" in s]
    assert stored == sorted(stored, reverse=True)
    code, message = _error(lambda: client.describe_log_streams(
        logGroupName=TRAINING, orderBy="LastEventTime", logStreamNamePrefix="multi/"))
    assert (code, message) == ("InvalidParameterException",
                               "Cannot order by LastEventTime with a logStreamNamePrefix.")


def test_unknown_group_and_stream(world: World, client: Any) -> None:
    assert _error(lambda: client.describe_log_streams(logGroupName="/aws/sagemaker/Endpoints/x")
                  ) == ("ResourceNotFoundException", "The specified log group does not exist.")
    no_stream = ("ResourceNotFoundException", "The specified log stream does not exist.")
    good = world.stream("multi")
    wrong_epoch = good.rsplit("-", 1)[0] + "-1"
    for name in ("nope/algo-1-1", wrong_epoch, "multi/algo-9-" + good.rsplit("-", 1)[1],
                 "multi/../../state-1", "multi"):
        def call(stream: str = name) -> Any:
            return client.get_log_events(logGroupName=TRAINING, logStreamName=stream)

        assert _error(call) == no_stream
    # The ARN form of the group names the same group.
    arn = f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:{TRAINING}:*"
    events = client.get_log_events(logGroupIdentifier=arn, logStreamName=good, limit=1)
    assert [e["message"] for e in events["events"]] == ["algo-1 line 39"]
    with pytest.raises(LogsResourceNotFound):
        logs.get_log_events(world.plane, {"logGroupName": PROCESSING, "logStreamName": good})


# -- GetLogEvents ---------------------------------------------------------------------------
def _forward_all(client: Any, stream: str, **params: Any) -> tuple[list[list[str]], str]:
    pages: list[list[str]] = []
    token = None
    while True:
        extra: dict[str, str] = {"nextToken": token} if token else {}
        page = client.get_log_events(logGroupName=TRAINING, logStreamName=stream,
                                     startFromHead=True, **params, **extra)
        pages.append([e["message"] for e in page["events"]])
        if not page["events"]:
            assert page["nextForwardToken"] == (token or page["nextForwardToken"])
            return pages, page["nextForwardToken"]
        token = page["nextForwardToken"]


def test_forward_paging_until_an_empty_page(world: World, client: Any) -> None:
    pages, last = _forward_all(client, world.stream("single"))
    assert [len(p) for p in pages] == [10_000, 2_000, 0]
    assert [m for p in pages for m in p] == [f"n {i}" for i in range(12_000)]
    assert last.startswith("f/") and len(last) == 58
    # Caught up stays caught up: the same token gives the same empty page.
    again = client.get_log_events(logGroupName=TRAINING, logStreamName=world.stream("single"),
                                  nextToken=last)
    assert again["events"] == [] and again["nextForwardToken"] == last
    small, _ = _forward_all(client, world.stream("single"), limit=4999)
    assert [len(p) for p in small] == [4999, 4999, 2002, 0]


def test_default_reads_the_newest_and_pages_backward(world: World, client: Any) -> None:
    stream = world.stream("single")
    tail = client.get_log_events(logGroupName=TRAINING, logStreamName=stream, limit=5)
    assert [e["message"] for e in tail["events"]] == [f"n {i}" for i in range(11_995, 12_000)]
    newer = client.get_log_events(logGroupName=TRAINING, logStreamName=stream,
                                  nextToken=tail["nextForwardToken"])
    assert newer["events"] == []
    default = client.get_log_events(logGroupName=TRAINING, logStreamName=stream)
    assert [e["message"] for e in default["events"]] == [f"n {i}" for i in range(2_000, 12_000)]
    back = client.get_log_events(logGroupName=TRAINING, logStreamName=stream,
                                 nextToken=default["nextBackwardToken"])
    assert [e["message"] for e in back["events"]] == [f"n {i}" for i in range(2_000)]
    head = client.get_log_events(logGroupName=TRAINING, logStreamName=stream,
                                 nextToken=back["nextBackwardToken"])
    assert head["events"] == [] and head["nextBackwardToken"] == back["nextBackwardToken"]
    # Forward from a backward page continues after its newest event.
    after = client.get_log_events(logGroupName=TRAINING, logStreamName=stream, limit=2,
                                  nextToken=back["nextForwardToken"])
    assert [e["message"] for e in after["events"]] == ["n 2000", "n 2001"]


def test_time_filters_and_equal_timestamps(world: World, client: Any) -> None:
    stream = world.stream("timed")

    def messages(**params: Any) -> list[str]:
        page = client.get_log_events(logGroupName=TRAINING, logStreamName=stream, **params)
        return [e["message"] for e in page["events"]]

    assert messages(startFromHead=True) == [f"t{i}" for i in range(10)] + [
        "same a", "same b", "same c"]
    # startTime inclusive, endTime exclusive.
    assert messages(startFromHead=True, startTime=BASE_MS + 3000,
                    endTime=BASE_MS + 6000) == ["t3", "t4", "t5"]
    assert messages(startTime=BASE_MS + 20_000) == ["same a", "same b", "same c"]
    assert messages(endTime=BASE_MS + 2000, limit=1) == ["t1"]
    page = client.get_log_events(logGroupName=TRAINING, logStreamName=stream,
                                 startFromHead=True, startTime=BASE_MS + 20_000, limit=2)
    assert [(e["timestamp"], e["message"]) for e in page["events"]] == [
        (BASE_MS + 20_000, "same a"), (BASE_MS + 20_000, "same b")]
    assert page["events"][0]["ingestionTime"] == BASE_MS + 20_000
    rest = client.get_log_events(logGroupName=TRAINING, logStreamName=stream,
                                 startTime=BASE_MS + 20_000, nextToken=page["nextForwardToken"])
    assert [e["message"] for e in rest["events"]] == ["same c"]


def test_one_megabyte_cap(world: World, client: Any) -> None:
    pages, _ = _forward_all(client, world.stream("big"))
    sizes = [sum(len(m) + 26 for m in page) for page in pages]
    assert all(size <= MAX_RESPONSE_BYTES for size in sizes)
    assert [len(p) for p in pages] == [10, 10, 5, 0]
    assert [m[:2] for p in pages for m in p] == [f"{i:02d}" for i in range(25)]
    tail = client.get_log_events(logGroupName=TRAINING, logStreamName=world.stream("big"))
    assert [e["message"][:2] for e in tail["events"]] == [f"{i:02d}" for i in range(15, 25)]


@pytest.mark.parametrize("token", ["f/12", "x/00", "f/", "b/99999999999", "garbage"],
                         ids=["mid-line", "direction", "empty", "past-end", "garbage"])
def test_bad_event_token(world: World, client: Any, token: str) -> None:
    assert _error(lambda: client.get_log_events(
        logGroupName=TRAINING, logStreamName=world.stream("single"), nextToken=token)) == (
        "InvalidParameterException", "The specified nextToken is invalid.")


def test_limit_bounds(world: World) -> None:
    with pytest.raises(InvalidParameter, match="less than or equal to 10000"):
        logs.get_log_events(world.plane, {"logGroupName": TRAINING, "limit": 10_001,
                                          "logStreamName": world.stream("single")})
    with pytest.raises(InvalidParameter, match="less than or equal to 50"):
        logs.describe_log_streams(world.plane, {"logGroupName": TRAINING, "limit": 51})


# -- FilterLogEvents ------------------------------------------------------------------------
def _filter_all(client: Any, **params: Any) -> list[dict[str, Any]]:
    pages = _pages(client.get_paginator("filter_log_events").paginate(
        logGroupName=TRAINING, **params))
    assert "nextToken" not in pages[-1]
    return [e for page in pages for e in page["events"]]


def test_filter_interleaves_streams(world: World, client: Any) -> None:
    events = _filter_all(client, logStreamNamePrefix="multi/")
    assert len(events) == 120
    keys = [(e["timestamp"], e["logStreamName"]) for e in events]
    assert keys == sorted(keys)
    for host in ("algo-1", "algo-2", "algo-3"):
        assert [e["message"] for e in events if e["logStreamName"].startswith(
            f"multi/{host}-")] == [f"{host} line {i}" for i in range(40)]
    assert len({e["eventId"] for e in events}) == 120
    assert all(len(e["eventId"]) == 56 and e["ingestionTime"] == e["timestamp"] for e in events)
    paged = _filter_all(client, logStreamNamePrefix="multi/",
                        PaginationConfig={"PageSize": 7})
    assert paged == events
    direct = logs.filter_log_events(world.plane, {"logGroupName": TRAINING,
                                                  "logStreamNamePrefix": "multi/", "limit": 7})
    assert len(direct["events"]) == 7 and direct["nextToken"]


def test_filter_patterns(world: World, client: Any) -> None:
    def matched(pattern: str, **params: Any) -> list[str]:
        return [e["message"] for e in _filter_all(client, logStreamNamePrefix="multi/",
                                                  filterPattern=pattern, **params)]

    assert sorted(matched('"algo-2 line 3"')) == sorted(
        ["algo-2 line 3"] + [f"algo-2 line {i}" for i in range(30, 40)])
    assert sorted(matched("algo-3 7")) == sorted(["algo-3 line 7", "algo-3 line 17",
                                                  "algo-3 line 27", "algo-3 line 37"])
    assert sorted(matched('"line 12" ?algo-1 ?algo-2')) == ["algo-1 line 12", "algo-2 line 12"]
    assert sorted(matched('"line 12" -algo-1')) == ["algo-2 line 12", "algo-3 line 12"]
    assert matched("Line") == []  # case-sensitive, as CloudWatch
    assert len(matched("")) == 120
    code, _ = _error(lambda: client.filter_log_events(logGroupName=TRAINING,
                                                      filterPattern='{ $.level = "x" }'))
    assert code == "InvalidParameterException"
    code, _ = _error(lambda: client.filter_log_events(logGroupName=TRAINING,
                                                      filterPattern='"unterminated'))
    assert code == "InvalidParameterException"


def test_filter_selection_and_time(world: World, client: Any) -> None:
    names = [world.stream("multi-2"), world.stream("timed"), "multi/algo-7-1"]
    events = _filter_all(client, logStreamNames=names)
    assert [e["message"] for e in events] == ["other job", "t0", "t1", "t2", "t3", "t4", "t5",
                                              "t6", "t7", "t8", "t9", "same a", "same b",
                                              "same c"]
    windowed = _filter_all(client, startTime=BASE_MS + 8000, endTime=BASE_MS + 30_000)
    assert [e["message"] for e in windowed] == ["t8", "t9", "same a", "same b", "same c"]
    everything = _filter_all(client, filterPattern="other")
    assert [(e["logStreamName"], e["message"]) for e in everything] == [
        (world.stream("multi-2"), "other job")]
    code, _ = _error(lambda: client.filter_log_events(
        logGroupName=TRAINING, logStreamNames=names, logStreamNamePrefix="multi"))
    assert code == "InvalidParameterException"
    code, _ = _error(lambda: client.filter_log_events(logGroupName=TRAINING, nextToken="x"))
    assert code == "InvalidParameterException"


# -- SDK v2's log-tailing loop ----------------------------------------------------------------
@dataclass
class Position:
    timestamp: int
    skip: int


def _log_stream(client: Any, group: str, stream: str, start_time: int, skip: int
                ) -> Iterator[dict[str, Any]]:
    """sagemaker/logs.py ``log_stream``: follow nextForwardToken until an empty page."""
    next_token = None
    event_count = 1
    while event_count > 0:
        token_arg: dict[str, str] = {"nextToken": next_token} if next_token is not None else {}
        response = client.get_log_events(logGroupName=group, logStreamName=stream,
                                         startTime=start_time, startFromHead=True,
                                         **token_arg)
        next_token = response["nextForwardToken"]
        events = response["events"]
        event_count = len(events)
        if event_count > skip:
            events = events[skip:]
            skip = 0
        else:
            skip = skip - event_count
            events = []
        yield from events


def _multi_stream_iter(client: Any, group: str, streams: list[str],
                       positions: dict[str, Position]) -> Iterator[tuple[int, dict[str, Any]]]:
    """sagemaker/logs.py ``multi_stream_iter``: merge streams by timestamp."""
    iters = [_log_stream(client, group, s, positions[s].timestamp, positions[s].skip)
             for s in streams]
    heads = [next(it, None) for it in iters]
    while any(heads):
        # The SDK's ``argmin``: the first live stream with the smallest timestamp.
        i = min((k for k, e in enumerate(heads) if e is not None),
                key=lambda k: _timestamp(heads[k]))
        event = heads[i]
        assert event is not None
        yield i, event
        heads[i] = next(iters[i], None)


def _timestamp(event: dict[str, Any] | None) -> int:
    assert event is not None
    return int(event["timestamp"])


def _flush(client: Any, job: str, group: str, instance_count: int, stream_names: list[str],
           positions: dict[str, Position], out: list[tuple[str, str]]) -> list[str]:
    """sagemaker/session.py ``_flush_log_streams``, including its nextToken loop."""
    if len(stream_names) < instance_count:
        try:
            streams = client.describe_log_streams(
                logGroupName=group, logStreamNamePrefix=job + "/", orderBy="LogStreamName",
                limit=min(instance_count, 50))
            stream_names = [s["logStreamName"] for s in streams["logStreams"]]
            calls = 0
            while "nextToken" in streams:
                calls += 1
                assert calls < 5, "the SDK would loop forever here"
                streams = client.describe_log_streams(
                    logGroupName=group, logStreamNamePrefix=job + "/", orderBy="LogStreamName",
                    limit=50)
                stream_names.extend(s["logStreamName"] for s in streams["logStreams"])
            for s in stream_names:
                positions.setdefault(s, Position(timestamp=0, skip=0))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
    if stream_names:
        for idx, event in _multi_stream_iter(client, group, stream_names, positions):
            out.append((stream_names[idx], event["message"]))
            ts, count = positions[stream_names[idx]].timestamp, positions[stream_names[idx]].skip
            if event["timestamp"] == ts:
                positions[stream_names[idx]] = Position(timestamp=ts, skip=count + 1)
            else:
                positions[stream_names[idx]] = Position(timestamp=event["timestamp"], skip=1)
    return stream_names


def test_sdk_loop_on_a_finished_job(world: World, client: Any) -> None:
    positions: dict[str, Position] = {}
    out: list[tuple[str, str]] = []
    names = _flush(client, "multi", TRAINING, 3, [], positions, out)
    assert len(names) == 3
    for _ in range(2):  # later polls find nothing new
        names = _flush(client, "multi", TRAINING, 3, names, positions, out)
    for n, name in enumerate(names, start=1):
        assert [m for s, m in out if s == name] == [f"algo-{n} line {i}" for i in range(40)]
    assert len(out) == 120


def test_sdk_loop_tails_a_running_job(world: World, client: Any, tmp_path: Path) -> None:
    plane, runtime = world.plane, world.runtime
    plane.create("training", _training("live", tmp_path, hosts=2))
    deadline = time.monotonic() + 10
    while len([s for s in runtime.started if s.labels[JOB_NAME_LABEL] == "live"]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    containers = {s.labels[HOST_LABEL]: s.name for s in runtime.started
                  if s.labels[JOB_NAME_LABEL] == "live"}
    positions: dict[str, Position] = {}
    out: list[tuple[str, str]] = []
    names: list[str] = []
    sent: dict[str, list[str]] = {"algo-1": [], "algo-2": []}
    for batch in range(6):
        for i in range(30):  # bursts: many events share a millisecond
            for host, container in containers.items():
                text = f"{host} b{batch} {i}"
                runtime.emit(container, text)
                sent[host].append(text)
        names = _flush(client, "live", TRAINING, 2, names, positions, out)
    for container in containers.values():
        runtime.finish(container, 0)
    assert plane.wait("training", "live", timeout=30)["TrainingJobStatus"] == "Completed"
    names = _flush(client, "live", TRAINING, 2, names, positions, out)
    names = _flush(client, "live", TRAINING, 2, names, positions, out)
    assert sorted(names) == [world.stream("live", h) for h in ("algo-1", "algo-2")]
    for host in ("algo-1", "algo-2"):
        assert [m for s, m in out if s == world.stream("live", host)] == sent[host]
    assert len(out) == 360


# -- STS GetCallerIdentity ------------------------------------------------------------------
def test_sts_get_caller_identity_through_boto3(endpoint: str) -> None:
    identity = _client(endpoint, "sts").get_caller_identity()
    assert identity["Account"] == ACCOUNT
    assert identity["Arn"] == (
        f"arn:aws:sts::{ACCOUNT}:assumed-role/ShipyardExecutionRole/{ACCESS_KEY}")
    assert identity["UserId"] == sts.user_id(ACCOUNT, ACCESS_KEY)
    role_id, session = identity["UserId"].split(":")
    assert role_id.startswith("AROA") and len(role_id) == 21 and session == ACCESS_KEY
    assert identity["ResponseMetadata"]["RequestId"] == "rid-1"


def test_sts_unknown_action_is_a_query_error(endpoint: str) -> None:
    request = urllib.request.Request(
        endpoint + "/", data=b"Action=AssumeRole&Version=2011-06-15", method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400
    body = info.value.read()
    model = botocore.session.get_session().get_service_model("sts")
    parsed = botocore.parsers.QueryParser().parse(
        {"body": body, "headers": {}, "status_code": 400},
        model.operation_model("AssumeRole").output_shape)
    assert parsed["Error"] == {"Type": "Sender", "Code": "InvalidAction",
                               "Message": "Could not find operation AssumeRole for version "
                                          "2011-06-15"}
    assert parsed["ResponseMetadata"]["RequestId"] == "rid-error"


def test_sts_helpers() -> None:
    assert sts.parse_query_body(b"Action=GetCallerIdentity&Version=2011-06-15") == {
        "Action": "GetCallerIdentity", "Version": "2011-06-15"}
    assert sts.parse_query_body(b"") == {}
    assert b"<Type>Receiver</Type>" in sts.query_error("InternalFailure", "x", 500)
    assert b"&lt;b&gt;" in sts.query_error("InvalidAction", "<b>", 400)
    assert sts.user_id("1", "a") == sts.user_id("1", "a") != sts.user_id("1", "b")
