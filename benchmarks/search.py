"""Search over 10,000 training jobs: a page in <= 50 ms p99 on the server's side (issue 14).

The data directory holds 10,000 completed training jobs, written into ``state.db`` as
``api_throughput.py`` writes them (the records the control plane and supervisor leave, built
by the same code: seven hyperparameters, two final metrics), and a third of them tagged
(``team``, ``stage``) as ``AddTags`` stores tags. ``python -m shipyard.api.server`` then runs
on it in its own process, as it is deployed.

Filter shapes, each request with a different value (a query's matches are cached until its
table changes, so repeating one value would measure the cache):

- ``name``: ``TrainingJobName`` Equals a job's name (one match);
- ``metric``: ``Metrics.validation:auc`` GreaterThan a value (about half match);
- ``hyperparameter``: ``HyperParameters.max_depth`` Equals an integer (a sixth match);
- ``nested``: ``NestedFilters`` over ``InputDataConfig`` (one channel named ``validation``
  whose ``S3Uri`` Contains a run's prefix);
- ``tags``: ``Tags.team`` Equals a team (a thirtieth match);
- ``and_or``: ``max_depth`` LessThan n And (metric GreaterThan x Or ``Tags.stage`` Equals s).

Each at ``MaxResults`` 10 and 100, the default order (``LastModifiedTime`` descending), four
ways:

- ``plane``: the server's part, timed in this process over the same data directory: the
  control plane's search (``shipyard.control.search.search`` over a ``SearchIndex``, what
  ``ControlPlane.search`` runs) plus the API handler's response (``api.search.search``) encoded
  as JSON: everything the server does for a request but HTTP and the signature check;
- ``http``: the same request signed ahead of time and sent over one keep-alive ``http.client``
  connection to the server process: the server's whole answer, with a client that costs ~0;
- ``boto3``: ``client.search(...)``, what a user's code sees (boto3 parses the answer:
  ~210 KB for 100 records);
- the competitor, ``naive``: what a straightforward implementation does per request: read
  every training job's record (and tags) from the same SQLite database, ``json.loads`` each,
  filter with a Python predicate, sort, slice. Beside it ``naive (in memory)``: the same
  filter over records already parsed and held (a full scan without the reading).

Target: ``plane`` p99 <= 50 ms for every shape and page size.

Run from the repository root::

    .venv/bin/python benchmarks/search.py                       # 10,000 jobs, ~2 minutes
    .venv/bin/python benchmarks/search.py --jobs 2000 --requests 50   # quick look

No Docker engine, no network: the server runs with the process runtime and starts nothing.
Everything lives in a temporary directory; the server (and its data plane) are stopped by pid.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import http.client
import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_throughput import (
    REGION,
    ROOT,
    Server,
    job_name,
    make_client,
    seed_shipyard,
    shipyard_server,
)
from bench_stats import latency_summary

RESULTS = ROOT / "benchmarks" / "results" / "search.json"
TARGET_P99_MS = 50.0
PAGE_SIZES = (10, 100)
TEAMS = 10
STAGES = ("dev", "staging", "prod")
SHAPES = ("name", "metric", "hyperparameter", "nested", "tags", "and_or")

Request = dict[str, Any]
Predicate = Callable[[dict[str, Any], dict[str, str]], bool]


# -- the data ------------------------------------------------------------------------------------
def tag_jobs(data_dir: Path, jobs: int) -> int:
    """Tag every third job (``team``, ``stage``), rows as ``Store.add_tags`` writes them."""
    from shipyard.control.state import records

    rows = []
    for i in range(0, jobs, 3):
        arn = records.job_arn("training", job_name(i), REGION, "000000000000")
        rows += [(arn, "team", f"team-{i % TEAMS}"), (arn, "stage", STAGES[i % len(STAGES)])]
    conn = sqlite3.connect(data_dir / "state.db", isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO tags (arn, key, value) VALUES (?, ?, ?)", rows)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return len(rows) // 2


# -- the requests --------------------------------------------------------------------------------
def request_for(shape: str, rng: random.Random, jobs: int) -> tuple[Request, Predicate]:
    """A Search request of ``shape`` with a random value, and the naive predicate it means."""
    def metric(record: dict[str, Any]) -> float | None:
        for m in record.get("FinalMetricDataList", []):
            if m["MetricName"] == "validation:auc":
                return float(m["Value"])
        return None

    if shape == "name":
        name = job_name(rng.randrange(jobs))
        return ({"Filters": [{"Name": "TrainingJobName", "Operator": "Equals", "Value": name}]},
                lambda r, t: r["TrainingJobName"] == name)
    if shape == "metric":
        x = round(rng.uniform(0.9, 0.99), 4)
        return ({"Filters": [{"Name": "Metrics.validation:auc", "Operator": "GreaterThan",
                              "Value": str(x)}]},
                lambda r, t: (metric(r) or 0) > x)
    if shape == "hyperparameter":
        depth = rng.randrange(3, 9)
        return ({"Filters": [{"Name": "HyperParameters.max_depth", "Operator": "Equals",
                              "Value": str(depth)}]},
                lambda r, t: int(r["HyperParameters"]["max_depth"]) == depth)
    if shape == "nested":
        # Every job's channels share their URIs: a random length of the validation
        # channel's path, so that each request differs.
        part = "/xgb/validation/"[: 8 + rng.randrange(8)]
        return ({"NestedFilters": [{"NestedPropertyName": "InputDataConfig", "Filters": [
                    {"Name": "InputDataConfig.ChannelName", "Operator": "Equals",
                     "Value": "validation"},
                    {"Name": "InputDataConfig.DataSource.S3DataSource.S3Uri",
                     "Operator": "Contains", "Value": part}]}]},
                lambda r, t: any(c["ChannelName"] == "validation"
                                 and part in c["DataSource"]["S3DataSource"]["S3Uri"]
                                 for c in r["InputDataConfig"]))
    if shape == "tags":
        team = f"team-{rng.randrange(TEAMS)}"
        return ({"Filters": [{"Name": "Tags.team", "Operator": "Equals", "Value": team}]},
                lambda r, t: t.get("team") == team)
    if shape == "and_or":
        depth, x, stage = rng.randrange(4, 9), round(rng.uniform(0.9, 0.99), 4), rng.choice(
            STAGES)
        return ({"Filters": [{"Name": "HyperParameters.max_depth", "Operator": "LessThan",
                              "Value": str(depth)}],
                 "SubExpressions": [{"Operator": "Or", "Filters": [
                     {"Name": "Metrics.validation:auc", "Operator": "GreaterThan",
                      "Value": str(x)},
                     {"Name": "Tags.stage", "Operator": "Equals", "Value": stage}]}]},
                lambda r, t: int(r["HyperParameters"]["max_depth"]) < depth
                and ((metric(r) or 0) > x or t.get("stage") == stage))
    raise ValueError(shape)


def params(expression: Request, limit: int) -> Request:
    return {"Resource": "TrainingJob", "SearchExpression": expression, "MaxResults": limit}


# -- the four ways -------------------------------------------------------------------------------
class InProcessPlane:
    """What ``api.search.search`` calls on the server's plane, over a ``SearchIndex`` of the
    same data directory (``ControlPlane.search`` is exactly this call)."""

    def __init__(self, data_dir: Path) -> None:
        from shipyard.control.search import SearchIndex

        self.index = SearchIndex(data_dir / "state.db")

    def search(self, request: Request, offset: int = 0, limit: int = 10) -> Any:
        from shipyard.control.search import search

        return search(self.index, request, offset, limit)


def time_plane(plane: InProcessPlane, body: Request) -> tuple[float, int]:
    from shipyard.api.search import search

    t0 = time.perf_counter()
    answer = search(plane, body)  # type: ignore[arg-type]
    json.dumps(answer, default=str)
    elapsed = time.perf_counter() - t0
    return elapsed, int(answer["TotalHits"]["Value"])


def signed_http(server: Server) -> Callable[[Request], tuple[float, int]]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    signer = SigV4Auth(Credentials(server.akid, server.secret), "sagemaker", REGION)
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)

    def call(body: Request) -> tuple[float, int]:
        data = json.dumps(body).encode()
        request = AWSRequest(method="POST", url=server.url + "/", data=data, headers={
            "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.Search"})
        signer.add_auth(request)
        headers = dict(request.prepare().headers.items())
        t0 = time.perf_counter()
        conn.request("POST", "/", body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - t0
        if response.status != 200:
            raise RuntimeError(f"Search: {response.status} {payload[:300]!r}")
        return elapsed, int(json.loads(payload)["TotalHits"]["Value"])

    return call


def boto3_call(server: Server) -> Callable[[Request], tuple[float, int]]:
    client = make_client(server.url, server.akid, server.secret)

    def call(body: Request) -> tuple[float, int]:
        t0 = time.perf_counter()
        answer = client.search(**body)
        return time.perf_counter() - t0, int(answer["TotalHits"]["Value"])

    return call


def load_all(data_dir: Path) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Every training job's record and tags, read and parsed (the naive way's first step)."""
    conn = sqlite3.connect(f"file:{data_dir / 'state.db'}?mode=ro", uri=True)
    try:
        tags: dict[str, dict[str, str]] = {}
        for arn, key, value in conn.execute("SELECT arn, key, value FROM tags"):
            tags.setdefault(arn, {})[key] = value
        return [(record, tags.get(arn, {})) for arn, record in (
            (arn, json.loads(text)) for arn, text in conn.execute(
                "SELECT arn, record FROM jobs WHERE kind = 'training'"))]
    finally:
        conn.close()


def naive(rows: list[tuple[dict[str, Any], dict[str, str]]], predicate: Predicate,
          limit: int) -> tuple[list[dict[str, Any]], int]:
    found = [(r, t) for r, t in rows if predicate(r, t)]
    found.sort(key=lambda rt: float(rt[0].get("LastModifiedTime") or 0), reverse=True)
    return [{**r, "Tags": [{"Key": k, "Value": v} for k, v in t.items()]}
            for r, t in found[:limit]], len(found)


def time_naive(data_dir: Path, predicate: Predicate, limit: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    page, total = naive(load_all(data_dir), predicate, limit)
    json.dumps(page, default=str)
    return time.perf_counter() - t0, total


def time_naive_memory(rows: list[tuple[dict[str, Any], dict[str, str]]],
                      predicate: Predicate, limit: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    page, total = naive(rows, predicate, limit)
    json.dumps(page, default=str)
    return time.perf_counter() - t0, total


# -- the run -------------------------------------------------------------------------------------
def measure(data_dir: Path, server: Server, jobs: int, requests: int, naive_requests: int,
            seed: int) -> dict[str, Any]:
    plane = InProcessPlane(data_dir)
    over_http = signed_http(server)
    with_boto3 = boto3_call(server)
    held = load_all(data_dir)
    # The parsed records would make every full collection of this process slower, and the
    # server holds no such thing: keep them out of the collector's sight.
    gc.collect()
    gc.freeze()
    # Warm: the first search of a kind loads its columns (server and this process alike).
    first: dict[str, float] = {}
    for shape in SHAPES:
        expression, _ = request_for(shape, random.Random(seed), jobs)
        t0 = time.perf_counter()
        plane.search({"Resource": "TrainingJob", "SearchExpression": expression}, 0, 10)
        first[shape] = round((time.perf_counter() - t0) * 1000, 1)
        over_http(params(expression, 10))
        with_boto3(params(expression, 10))
    results: dict[str, Any] = {}
    for shape in SHAPES:
        for limit in PAGE_SIZES:
            rng = random.Random(f"{seed}-{shape}-{limit}")
            cases = [request_for(shape, rng, jobs) for _ in range(requests)]
            times: dict[str, list[float]] = {"plane": [], "http": [], "boto3": [],
                                             "naive": [], "naive_memory": []}
            hits: list[int] = []
            for k, (expression, predicate) in enumerate(cases):
                body = params(expression, limit)
                elapsed, total = time_plane(plane, body)
                times["plane"].append(elapsed)
                hits.append(total)
                elapsed, remote = over_http(body)
                times["http"].append(elapsed)
                elapsed, parsed = with_boto3(body)
                times["boto3"].append(elapsed)
                if k < naive_requests:
                    elapsed, naive_total = time_naive(data_dir, predicate, limit)
                    times["naive"].append(elapsed)
                    elapsed, _ = time_naive_memory(held, predicate, limit)
                    times["naive_memory"].append(elapsed)
                    if naive_total != total:
                        raise RuntimeError(f"{shape}: Search found {total}, the naive scan "
                                           f"{naive_total} for {expression}")
                if not total == remote == parsed:
                    raise RuntimeError(f"{shape}: totals differ: {total} {remote} {parsed}")
            results[f"{shape}/{limit}"] = {
                "shape": shape, "max_results": limit,
                "mean_hits": round(sum(hits) / len(hits), 1),
                **{way: latency_summary(values) for way, values in times.items()}}
    plane.index.close()
    return {"first_search_ms": first, "cases": results}


def print_table(result: dict[str, Any]) -> None:
    ways = ("plane", "http", "boto3", "naive", "naive_memory")
    head = f"{'shape':<15} {'max':>4} {'hits':>7} " + " ".join(
        f"{w + ' p50/p99':>20}" for w in ways)
    print(head)
    print("-" * len(head))
    for case in result["cases"].values():
        cells = " ".join(f"{case[w]['p50_ms']:>9.2f}/{case[w]['p99_ms']:<10.2f}" for w in ways)
        print(f"{case['shape']:<15} {case['max_results']:>4} {case['mean_hits']:>7} {cells}")
    print(f"\nplane p99 worst: {result['plane_p99_worst_ms']} ms "
          f"(target <= {TARGET_P99_MS} ms): {'PASS' if result['target_met'] else 'FAIL'}")


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "boto3": version("boto3"),
            "load_avg_at_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--requests", type=int, default=200,
                        help="Requests per shape and page size (each a different value).")
    parser.add_argument("--naive-requests", type=int, default=20,
                        help="How many of them the naive scan also answers.")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--no-write", action="store_true", help="Do not write the results.")
    args = parser.parse_args(argv)
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    info = machine()
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-search-") as tmp:
        data_dir = Path(tmp) / "state"
        data_dir.mkdir()
        seeded = seed_shipyard(data_dir, args.jobs)
        seeded["tagged_jobs"] = tag_jobs(data_dir, args.jobs)
        print(f"{args.jobs} training jobs written in {seeded['seconds']} s "
              f"({seeded['tagged_jobs']} tagged)", flush=True)
        with shipyard_server(data_dir, Path(tmp) / "server.log") as server:
            gc.collect()
            result = measure(data_dir, server, args.jobs, args.requests,
                             args.naive_requests, args.seed)
    worst = max(case["plane"]["p99_ms"] for case in result["cases"].values())
    result.update(plane_p99_worst_ms=worst, target_p99_ms=TARGET_P99_MS,
                  target_met=worst <= TARGET_P99_MS)
    print_table(result)
    output = {"benchmark": "search", "started": started_at, "machine": info,
              "jobs": args.jobs, "requests_per_case": args.requests,
              "naive_requests_per_case": args.naive_requests, "seeded": seeded, **result}
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(output, indent=2) + "\n")
        print(f"written: {RESULTS.relative_to(ROOT)}")
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
