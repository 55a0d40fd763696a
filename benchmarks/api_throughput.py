"""Control-plane throughput: how fast the SageMaker API answers once many jobs exist.

A SageMaker user's tools poll: the SDK's ``wait`` loops on DescribeTrainingJob, dashboards and
``list_training_jobs`` paginators walk ListTrainingJobs 100 summaries at a time (MaxResults
may be at most 100, and NextToken is returned while more follows: platform-api.md 3, 6). The
issue's targets, with 10,000 completed training jobs in the state database:

- DescribeTrainingJob: >= 1,000 requests/s;
- ListTrainingJobs, MaxResults=100: a page in <= 20 ms at p99.

Shipyard runs as it is deployed: ``python -m shipyard.api.server`` in its own process, the
clients in others, everything through real boto3 ``sagemaker`` clients (SigV4-signed, retries
off). The competitor is moto's server mode (``python -m moto.server``), the usual SageMaker
emulator, loaded with the same 10,000 jobs through CreateTrainingJob and measured the same way
in the same run on the same machine.

Run from the repository root::

    .venv/bin/python benchmarks/api_throughput.py [--jobs 10000] [--seconds 10]

Everything lives in a temporary directory; the two servers are the only processes started
besides this script's own client workers, and they are stopped by pid at the end, always.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "api_throughput.json"
TARGET_DESCRIBE_RPS = 1000.0
TARGET_LIST_P99_MS = 20.0
PAGE_SIZE = 100
REGION = "us-east-1"
ACCOUNT = "000000000000"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/xgboost:1.7-1"
STARTUP_TIMEOUT_S = 60.0


# -- the jobs ------------------------------------------------------------------------------------
def job_name(i: int) -> str:
    return f"bench-xgb-{i:05d}"


def create_request(i: int) -> dict[str, Any]:
    """A CreateTrainingJob request as the SageMaker SDK's generic Estimator sends one."""
    name = job_name(i)
    return {
        "TrainingJobName": name,
        "HyperParameters": {"max_depth": str(3 + i % 6), "eta": "0.2", "gamma": "4",
                            "min_child_weight": "6", "subsample": "0.8",
                            "objective": "binary:logistic", "num_round": str(50 + i % 100)},
        "AlgorithmSpecification": {
            "TrainingImage": IMAGE, "TrainingInputMode": "File",
            "MetricDefinitions": [
                {"Name": "validation:auc", "Regex": r".*\[[0-9]+\].*#011validation-auc:(\S+)"},
                {"Name": "train:auc", "Regex": r".*\[[0-9]+\].*#011train-auc:(\S+)"},
            ],
        },
        "RoleArn": ROLE,
        "InputDataConfig": [
            {"ChannelName": channel, "ContentType": "text/csv", "InputMode": "File",
             "CompressionType": "None",
             "DataSource": {"S3DataSource": {
                 "S3DataType": "S3Prefix", "S3DataDistributionType": "FullyReplicated",
                 "S3Uri": f"s3://bench-bucket/xgb/{channel}/"}}}
            for channel in ("train", "validation")
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://bench-bucket/xgb/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                           "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
        "Environment": {"BENCH_RUN": str(i % 17)},
    }


def completed_record(i: int, created: float) -> dict[str, Any]:
    """The DescribeTrainingJob record the server holds after the job completed normally.

    Built by the same code the control plane and supervisor run (``training.validate``,
    ``training.new_record``, ``records.transition``/``set_status``), step for step: created
    (Starting), staging (Downloading), containers started (Training), exited (Uploading),
    done (final metrics, end time, Completed).
    """
    from shipyard.control.jobs import training
    from shipyard.control.state import records

    req = training.validate(create_request(i))
    arn = records.job_arn("training", req["TrainingJobName"], REGION, ACCOUNT)
    record = training.new_record(req, arn, created)
    records.transition(record, "Downloading", "Downloading input data", created + 0.4)
    started = round(created + 2.1 + (i % 7) * 0.3, 3)
    record["TrainingStartTime"] = started
    records.transition(record, "Training",
                       "Training image download completed. Training in progress.", started)
    end = round(started + 60 + (i % 240), 3)
    records.transition(record, "Uploading", "Uploading generated training model", end - 1.5)
    auc = 0.90 + (i % 97) / 1000
    record["FinalMetricDataList"] = [
        {"MetricName": "train:auc", "Value": round(auc + 0.02, 5), "Timestamp": end - 2},
        {"MetricName": "validation:auc", "Value": round(auc, 5), "Timestamp": end - 2},
    ]
    record["TrainingEndTime"] = end
    seconds = max(1, round(end - started))
    record["TrainingTimeInSeconds"] = seconds
    record["BillableTimeInSeconds"] = seconds
    records.transition(record, "Completed", "Training job completed", end)
    records.set_status("training", record, records.COMPLETED, end)
    return record


def seed_shipyard(data_dir: Path, jobs: int) -> dict[str, Any]:
    """Write ``jobs`` completed training jobs into ``data_dir/state.db`` before the server starts.

    The first job goes through ``Store.insert_job``; the rest are the same INSERT, with the
    same serialisation, in one transaction (``insert_job`` commits each row on its own).
    """
    from shipyard.control.state import records
    from shipyard.control.state.store import Store

    t0 = time.perf_counter()
    base = time.time() - 30 * 86400
    rows = []
    for i in range(jobs):
        created = round(base + i * (30 * 86400 / max(jobs, 1)), 3)
        record = completed_record(i, created)
        rows.append((record, created))
    store = Store(data_dir / "state.db")
    runner = {"phase": "done"}
    first, _ = rows[0]
    store.insert_job("training", first["TrainingJobName"], first["TrainingJobArn"],
                     records.COMPLETED, first, runner)
    store.close()
    conn = sqlite3.connect(data_dir / "state.db", isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO jobs (kind, name, arn, status, creation_time, last_modified_time,"
            " record, runner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [("training", r["TrainingJobName"], r["TrainingJobArn"], records.COMPLETED,
              created, created, json.dumps(r), json.dumps(runner)) for r, created in rows[1:]])
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    sizes = [len(json.dumps(r)) for r, _ in rows[:100]]
    return {"seconds": round(time.perf_counter() - t0, 2),
            "record_bytes_mean": round(statistics.fmean(sizes)),
            "db_bytes": (data_dir / "state.db").stat().st_size}


def seed_moto(url: str, jobs: int, threads: int = 8) -> dict[str, Any]:
    """Create ``jobs`` training jobs in moto through CreateTrainingJob (moto's only way in)."""
    local = threading.local()

    def create(i: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = make_client(url, "testing", "testing")
        client.create_training_job(**create_request(i))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(create, range(jobs)):
            pass
    return {"seconds": round(time.perf_counter() - t0, 2)}


# -- servers -------------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    url: str
    pid: int
    akid: str
    secret: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str,
               log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise RuntimeError(f"{what} did not start; its log ends with:\n{tail}")


@contextmanager
def started(args: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` as a child; on the way out stop exactly that pid (TERM, then KILL)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out, env=env, cwd=str(ROOT))
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def shipyard_server(data_dir: Path, log: Path) -> Iterator[Server]:
    from shipyard.api.credentials import load_or_create

    # The process runtime: nothing here runs a container, so the engine is not needed.
    env = {**os.environ, "SHIPYARD_RUNTIME": "process", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "shipyard.api.server", "--data-dir", str(data_dir),
            "--host", "127.0.0.1", "--port", "0"]
    info = data_dir / "server.json"
    with started(args, log, env) as proc:
        def ready() -> bool:
            try:
                data = json.loads(info.read_text())
            except (OSError, ValueError):
                return False
            return bool(data.get("pid") == proc.pid)

        wait_until(ready, proc, "the Shipyard server", log)
        url = json.loads(info.read_text())["url"]
        akid, secret = load_or_create(data_dir).default
        try:
            yield Server("shipyard", url, proc.pid, akid, secret)
        finally:
            # The data plane owns the port and outlives a SIGTERM of the server: stop it.
            with contextlib.suppress(OSError, ValueError, KeyError):
                plane = json.loads((data_dir / "dataplane.json").read_text())
                os.kill(int(plane["pid"]), signal.SIGTERM)


@contextmanager
def moto_server(log: Path) -> Iterator[Server]:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    with started(args, log, env) as proc:
        def ready() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_until(ready, proc, "moto", log)
        yield Server("moto", url, proc.pid, "testing", "testing")


# -- clients -------------------------------------------------------------------------------------
def make_client(url: str, akid: str, secret: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "sagemaker", endpoint_url=url, region_name=REGION, aws_access_key_id=akid,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                      max_pool_connections=4))


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def describe_worker(server: Server, jobs: int, start_at: float, seconds: float,
                    seed: int) -> tuple[int, list[float], float]:
    """DescribeTrainingJob of random names from ``start_at`` for ``seconds``; latencies in s."""
    client = make_client(server.url, server.akid, server.secret)
    rng = random.Random(seed)
    for _ in range(20):  # warm the connection and botocore's caches
        client.describe_training_job(TrainingJobName=job_name(rng.randrange(jobs)))
    while time.time() < start_at:
        time.sleep(0.001)
    latencies = []
    end = start_at + seconds
    clock = time.perf_counter
    cpu0 = time.process_time()
    while time.time() < end:
        name = job_name(rng.randrange(jobs))
        t0 = clock()
        out = client.describe_training_job(TrainingJobName=name)
        latencies.append(clock() - t0)
        if out["TrainingJobName"] != name:
            raise RuntimeError(f"asked for {name}, got {out['TrainingJobName']}")
    return len(latencies), latencies, time.process_time() - cpu0


def raw_describe_worker(server: Server, jobs: int, start_at: float, seconds: float,
                        seed: int) -> tuple[int, list[float], float]:
    """The same DescribeTrainingJob requests, signed by botocore ahead of time and sent over
    one keep-alive ``http.client`` connection: what the server does when clients cost ~nothing.

    A SigV4 signature stays valid for the allowed clock skew (5 minutes), so each signed
    request is sent as many times as the window needs (names still random).
    """
    import http.client
    from urllib.parse import urlsplit

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    rng = random.Random(seed)
    signer = SigV4Auth(Credentials(server.akid, server.secret), "sagemaker", REGION)
    signed: list[tuple[str, bytes, dict[str, str]]] = []
    for _ in range(min(jobs, 2000)):
        name = job_name(rng.randrange(jobs))
        body = json.dumps({"TrainingJobName": name}).encode()
        request = AWSRequest(method="POST", url=server.url + "/", data=body, headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "SageMaker.DescribeTrainingJob"})
        signer.add_auth(request)
        signed.append((name, body, dict(request.prepare().headers.items())))
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)

    def call(k: int) -> None:
        name, body, headers = signed[k % len(signed)]
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200 or name.encode() not in data:
            raise RuntimeError(f"{server.name}: {response.status} {data[:200]!r}")

    for k in range(20):
        call(k)
    while time.time() < start_at:
        time.sleep(0.001)
    latencies = []
    end = start_at + seconds
    clock = time.perf_counter
    cpu0 = time.process_time()
    k = 0
    while time.time() < end:
        t0 = clock()
        call(k)
        latencies.append(clock() - t0)
        k += 1
    cpu = time.process_time() - cpu0
    conn.close()
    return len(latencies), latencies, cpu


def _raw_describe_worker_star(args: tuple[Any, ...]) -> tuple[int, list[float], float]:
    return raw_describe_worker(*args)


def _describe_worker_star(args: tuple[Any, ...]) -> tuple[int, list[float], float]:
    return describe_worker(*args)


def summarise(latencies: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    if not ms:
        return {}

    def q(p: float) -> float:
        return ms[min(len(ms) - 1, round(p * (len(ms) - 1)))]

    return {"n": len(ms), "p50_ms": round(q(0.50), 3), "p90_ms": round(q(0.90), 3),
            "p99_ms": round(q(0.99), 3), "max_ms": round(ms[-1], 3),
            "mean_ms": round(statistics.fmean(ms), 3)}


def describe_run(server: Server, worker: Callable[[tuple[Any, ...]], tuple[int, list[float],
                 float]], n: int | None, jobs: int, seconds: float) -> dict[str, Any]:
    """One Describe window: ``n`` client processes, or one thread in this process (None)."""
    cpu0 = cpu_seconds(server.pid)
    if n is None:
        results = [worker((server, jobs, time.time() + 0.5, seconds, 1))]
    else:
        start_at = time.time() + 3.0
        with mp.get_context("fork").Pool(n) as pool:
            results = pool.map(worker, [(server, jobs, start_at, seconds, 100 + k)
                                        for k in range(n)])
    cpu = cpu_seconds(server.pid) - cpu0
    count = sum(r[0] for r in results)
    warmups = 20 * len(results)  # inside the server's CPU window: a small overstatement
    return {"rps": round(count / seconds, 1),
            **summarise([x for r in results for x in r[1]]),
            "server_cpu_ms_per_req": round(1000 * cpu / max(count + warmups, 1), 3),
            "client_cpu_ms_per_req": round(1000 * sum(r[2] for r in results) / max(count, 1),
                                           3)}


def measure_describe(server: Server, jobs: int, seconds: float,
                     procs: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runs: list[tuple[str, str, Any, int | None]] = [
        ("1_thread", "boto3, 1 thread", _describe_worker_star, None)]
    runs += [(f"{n}_procs", f"boto3, {n} processes", _describe_worker_star, n) for n in procs]
    runs += [(f"raw_{n}_procs", f"pre-signed http.client, {n} processes",
              _raw_describe_worker_star, n) for n in procs]
    for key, label, worker, n in runs:
        out[key] = r = describe_run(server, worker, n, jobs, seconds)
        print(f"  {server.name} describe, {label}: {r['rps']:.0f}/s p50 {r['p50_ms']:.2f} ms"
              f" p99 {r['p99_ms']:.2f} ms; CPU/request: server {r['server_cpu_ms_per_req']:.3f}"
              f" ms, client {r['client_cpu_ms_per_req']:.3f} ms", flush=True)
    out["peak_rps"] = max(out[k]["rps"] for k, *_ in runs if not k.startswith("raw_"))
    out["raw_peak_rps"] = max(out[k]["rps"] for k, *_ in runs if k.startswith("raw_"))
    return out


def measure_list(server: Server, jobs: int, seconds: float, walks: int) -> dict[str, Any]:
    client = make_client(server.url, server.akid, server.secret)
    client.list_training_jobs(MaxResults=PAGE_SIZE)  # warm
    walk_lat: list[float] = []
    tokens: list[str | None] = [None]
    seen = 0
    walked = 0
    started_walks = time.perf_counter()
    for w in range(walks):
        if w and time.perf_counter() - started_walks > 20:
            break  # a slow server: one or two walks are enough, and the run must end
        walked += 1
        token: str | None = None
        seen = 0
        while True:
            kwargs: dict[str, Any] = {"MaxResults": PAGE_SIZE}
            if token:
                kwargs["NextToken"] = token
            t0 = time.perf_counter()
            page = client.list_training_jobs(**kwargs)
            walk_lat.append(time.perf_counter() - t0)
            seen += len(page["TrainingJobSummaries"])
            token = page.get("NextToken")
            if not token:
                break
            if w == 0:
                tokens.append(token)
        if seen != jobs:
            raise RuntimeError(f"{server.name}: walking NextToken gave {seen} jobs, not {jobs}")
    rng = random.Random(7)
    rand_lat: list[float] = []
    end = time.time() + seconds
    while time.time() < end:
        token = rng.choice(tokens)
        kwargs = {"MaxResults": PAGE_SIZE}
        if token:
            kwargs["NextToken"] = token
        t0 = time.perf_counter()
        page = client.list_training_jobs(**kwargs)
        rand_lat.append(time.perf_counter() - t0)
        if len(page["TrainingJobSummaries"]) != PAGE_SIZE:
            raise RuntimeError(f"{server.name}: a random page held "
                               f"{len(page['TrainingJobSummaries'])} summaries")
    walk = {"pages": len(walk_lat), "walks": walked, **summarise(walk_lat),
            "walk_seconds_mean": round(sum(walk_lat) / walked, 3)}
    rand = summarise(rand_lat)
    print(f"  {server.name} list walk: p50 {walk['p50_ms']:.2f} ms p99 {walk['p99_ms']:.2f} ms;"
          f" random pages: p50 {rand['p50_ms']:.2f} ms p99 {rand['p99_ms']:.2f} ms", flush=True)
    return {"walk": walk, "random": rand}


def measure(server: Server, args: argparse.Namespace, procs: list[int]) -> dict[str, Any]:
    return {"describe": measure_describe(server, args.jobs, args.seconds, procs),
            "list": measure_list(server, args.jobs, args.seconds, args.walks)}


# -- report --------------------------------------------------------------------------------------
def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "FAIL")


def table(result: dict[str, Any], procs: list[int]) -> list[tuple[str, str, str, str, str]]:
    ship, moto = result["shipyard"], result.get("moto")

    def get(r: dict[str, Any] | None, *path: str) -> Any:
        for p in path:
            if r is None:
                return None
            r = r.get(p)
        return r

    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    rows = []
    describe_runs = [("1_thread", "boto3, 1 thread")]
    describe_runs += [(f"{n}_procs", f"boto3, {n} proc") for n in procs]
    describe_runs += [(f"raw_{n}_procs", f"pre-signed, {n} proc") for n in procs]
    for key, label in describe_runs:
        for metric, unit, fmt in (("rps", "req/s", ".0f"), ("p50_ms", "p50 ms", ".2f"),
                                  ("p99_ms", "p99 ms", ".2f"),
                                  ("server_cpu_ms_per_req", "server CPU ms/req", ".3f")):
            rows.append((f"Describe, {label}: {unit}",
                         num(get(ship, "describe", key, metric), fmt),
                         num(get(moto, "describe", key, metric), fmt), "", ""))
    for key, label in (("peak_rps", "boto3 clients"), ("raw_peak_rps", "pre-signed")):
        peak = get(ship, "describe", key)
        rows.append((f"Describe, peak req/s, {label}", num(peak, ".0f"),
                     num(get(moto, "describe", key), ".0f"), f">= {TARGET_DESCRIBE_RPS:.0f}",
                     verdict(peak >= TARGET_DESCRIBE_RPS)))
    for part, label in (("walk", "List page (NextToken walk)"), ("random", "List page (random)")):
        for metric, unit in (("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")):
            value = get(ship, "list", part, metric)
            target, ok = "", None
            if metric == "p99_ms":
                target, ok = f"<= {TARGET_LIST_P99_MS:.0f}", value <= TARGET_LIST_P99_MS
            rows.append((f"{label}: {unit}", num(value, ".2f"),
                         num(get(moto, "list", part, metric), ".2f"), target, verdict(ok)))
    rows.append(("Full walk of all jobs: s", num(get(ship, "list", "walk", "walk_seconds_mean"),
                                                  ".3f"),
                 num(get(moto, "list", "walk", "walk_seconds_mean"), ".3f"), "", ""))
    return rows


def print_table(rows: list[tuple[str, str, str, str, str]]) -> None:
    header = ("", "Shipyard", "moto", "target", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                        for i, c in enumerate(row)))


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("boto3", "botocore", "uvicorn", "httptools", "uvloop", "h11", "moto",
                "werkzeug"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of each Describe window and of the random-page List run")
    parser.add_argument("--procs", default="1,2,4",
                        help="client process counts for the multi-process Describe runs")
    parser.add_argument("--walks", type=int, default=3, help="full NextToken walks to time")
    parser.add_argument("--no-moto", action="store_true", help="measure Shipyard only")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    procs = [int(p) for p in args.procs.split(",") if p.strip()]

    result: dict[str, Any] = {
        "benchmark": "api_throughput",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions(),
        "command": "benchmarks/api_throughput.py " + " ".join(argv or sys.argv[1:]),
        "jobs": args.jobs, "seconds": args.seconds, "procs": procs, "page_size": PAGE_SIZE,
        "targets": {"describe_rps": TARGET_DESCRIBE_RPS, "list_p99_ms": TARGET_LIST_P99_MS},
    }
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-api-") as tmp:
        tmpdir = Path(tmp)
        data_dir = tmpdir / "data"
        data_dir.mkdir()
        print(f"seeding {args.jobs} completed training jobs into Shipyard's state", flush=True)
        result["shipyard_seed"] = seed_shipyard(data_dir, args.jobs)
        print(f"  {result['shipyard_seed']}", flush=True)
        with shipyard_server(data_dir, tmpdir / "shipyard.log") as server:
            print(f"Shipyard at {server.url} (pid {server.pid})", flush=True)
            result["shipyard"] = measure(server, args, procs)
        if not args.no_moto:
            with moto_server(tmpdir / "moto.log") as server:
                print(f"moto at {server.url} (pid {server.pid}); creating {args.jobs} jobs",
                      flush=True)
                result["moto_seed"] = seed_moto(server.url, args.jobs)
                print(f"  {result['moto_seed']}", flush=True)
                result["moto"] = measure(server, args, procs)
    result["machine"]["loadavg_1m_at_end"] = os.getloadavg()[0]
    rows = table(result, procs)
    result["pass"] = all(r[4] != "FAIL" for r in rows)
    print()
    print_table(rows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    shown = args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output
    print(f"\nwrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
