"""InvokeEndpoint latency while CreateTrainingJob calls read big code archives (issue 11).

CreateTrainingJob checks the image and reads the whole ``sagemaker_submit_directory`` archive
before it answers. Before issue 11 it did so on the event loop that also answers
InvokeEndpoint, so every invocation waited for it. The case: InvokeEndpoint p99 while 20
CreateTrainingJob calls, each with a 50 MB ``file://`` source archive (a real ``.tar.gz`` of
random bytes: gzip cannot shrink it, so reading it costs what a real one does), run at once;
compared with the idle p99 of the same server in the same run. Target: within 2x of idle.
Reported beside it: how long each create took, and DescribeEndpoint meanwhile (a poller's
wait while the creates hold the handler threads).

Two servers run side by side, their rounds interleaved so drift on a shared machine hits both
alike: ``pool``, this tree as it runs (handlers in the app's thread pool), and ``inline``, the
same code with the handlers run on the event loop, as before issue 11 (the app's executor
replaced by one that runs each call where it is submitted). ``--modes`` also takes
``pool<N>``: the pool with N threads instead of ``HANDLER_THREADS`` (``pool1,pool4,inline``
compares pool sizes in one run).

Each server is ``python -m shipyard.api.server``'s ``main`` in its own process, with
``separate_data_plane`` off: one process answers everything, as a server embedded in a
program, or with the data plane off, does. (With the data plane on, the plain form of
InvokeEndpoint is answered by another process; every other request, response streams and
chunked uploads included, still meets the control plane's loop.) Supervisors are threads of
the server, as deployed, so each job's own staging (extracting the 50 MB) overlaps the window
in both modes alike; ``--supervisors process`` starts them as processes of their own (as the
CLI does), which leaves the server's GIL to the API. The runtime is the process runtime by
default: the endpoint and the training "image" are a folder with stdlib ``serve`` and
``train`` programs, and no engine is needed; ``--runtime docker`` runs them as an image built
``FROM`` the base image instead, so each create also asks the engine about the image.

Invocations: one thread, sequential, keep-alive ``http.client``, the request SigV4-signed once
by botocore and replayed. The 20 creates come from another process (boto3, one client and
thread each, released together), so their client-side work does not slow the invoking
client. "Under load" counts the invocations sent between the first create sent and the last
create answered. After each round, the jobs are waited for (they train nothing and complete).

Run from the repository root::

    .venv/bin/python benchmarks/invoke_under_load.py [--rounds 5] [--creates 20] [--archive-mb 50]
    .venv/bin/python benchmarks/invoke_under_load.py --supervisors process --runtime docker

Everything lives in a temporary directory, also the file root the servers are allowed
(``SHIPYARD_FILE_ROOTS``). The servers are stopped by pid at the end; with ``--runtime
docker``, the containers with the ``shipyard-bench`` scope are removed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench_stats import latency_summary

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "invoke_under_load.json"
REGION = "us-east-1"
ROLE = "arn:aws:iam::000000000000:role/shipyard-bench"
TARGET_P99_RATIO = 2.0
STARTUP_TIMEOUT_S = 60.0
JOBS_TIMEOUT_S = 600.0
PAYLOAD = b"1.0,2.0,3.0,4.0\n"
MODES = {"pool": "handlers in the app's thread pool (this tree)",
         "inline": "handlers on the event loop (as before issue 11)"}

# The endpoint and the training job, stdlib only: ``serve`` echoes, ``train`` succeeds.
SERVE = r'''#!/usr/bin/env python3
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body leave in two writes: with Nagle's algorithm on, the body waits
    # for the delayed ACK of the head (~40 ms).
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(200 if self.path == "/ping" else 404, b"")

    def do_POST(self):
        self.answer(200, self.rfile.read(int(self.headers.get("Content-Length") or 0)))


port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
'''
TRAIN = "#!/bin/sh\nexit 0\n"
DOCKERFILE = """\
FROM {base}
COPY serve train /usr/local/bin/
RUN chmod 755 /usr/local/bin/serve /usr/local/bin/train
"""


# -- the servers ---------------------------------------------------------------------------------
class Inline(Executor):
    """Runs each call where it is submitted: on the event loop, as handlers ran before."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def serve_mode(data_dir: str, mode: str, supervisors: str) -> int:
    """The API server as ``python -m shipyard.api.server`` runs it, handlers where ``mode``
    says; with ``supervisors`` ``process``, over a plane that starts them as processes."""
    sys.path.insert(0, str(ROOT / "src"))
    from shipyard.api import app, server

    if mode != "pool" and mode.startswith("pool"):
        app.HANDLER_THREADS = int(mode.removeprefix("pool"))
    if mode == "inline":
        make = app.create_app

        def create_inline(*args: Any, **kwargs: Any) -> Any:
            made = make(*args, **kwargs)
            made.executor = Inline()
            return made

        app.create_app = create_inline
    if supervisors == "thread":
        return int(server.main(["--data-dir", data_dir, "--host", "127.0.0.1", "--port", "0"]))
    from shipyard.api.processes import run_loop
    from shipyard.control import ControlPlane
    from shipyard.settings import Settings

    settings = Settings.load({"data_dir": data_dir})
    plane = ControlPlane(settings, launch="process")
    api = server.ApiServer(settings, plane, host="127.0.0.1", port=0)
    signal.signal(signal.SIGTERM, lambda signum, frame: setattr(api.server, "should_exit", True))
    try:
        run_loop(api.run())
    finally:
        plane.close()
    return 0


@dataclass
class Server:
    mode: str
    proc: subprocess.Popen[bytes]
    url: str
    akid: str
    secret: str
    endpoint: str = ""
    idle: list[float] = field(default_factory=list)
    loaded: list[float] = field(default_factory=list)
    creates: list[float] = field(default_factory=list)
    describes: list[float] = field(default_factory=list)
    bursts: list[float] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    failed_jobs: list[str] = field(default_factory=list)


def start_server(mode: str, data_dir: Path, env: dict[str, str], supervisors: str
                 ) -> Server:
    sys.path.insert(0, str(ROOT / "src"))
    from shipyard.api.credentials import load_or_create

    data_dir.mkdir(parents=True)
    log = data_dir.parent / f"server-{mode}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(data_dir), mode,
             supervisors],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=str(ROOT))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        with contextlib.suppress(OSError, ValueError):
            info = json.loads((data_dir / "server.json").read_text())
            if info.get("pid") == proc.pid:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            stop_process(proc)
            raise RuntimeError(f"the {mode} server did not start; its log:\n{tail}")
        time.sleep(0.02)
    akid, secret = load_or_create(data_dir).default
    return Server(mode, proc, str(info["url"]), akid, secret)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sagemaker(server: Server) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session(
        aws_access_key_id=server.akid, aws_secret_access_key=server.secret,
        region_name=REGION).client("sagemaker", endpoint_url=server.url, config=Config(
            retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=300))


def deploy(server: Server, image: str) -> None:
    sm = sagemaker(server)
    name = f"bench-{server.mode}-{uuid.uuid4().hex[:8]}"
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": image})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1,
        "InstanceType": "local"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    server.endpoint = name
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name,
                                              WaiterConfig={"Delay": 0.2, "MaxAttempts": 600})


def undeploy(server: Server) -> None:
    """Delete the endpoint and wait until it is gone: a server that stops leaves its
    endpoints serving, for the next one to take over."""
    from botocore.exceptions import ClientError

    sm = sagemaker(server)
    sm.delete_endpoint(EndpointName=server.endpoint)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            sm.describe_endpoint(EndpointName=server.endpoint)
        except ClientError:
            break
        time.sleep(0.05)
    sm.delete_endpoint_config(EndpointConfigName=server.endpoint)
    sm.delete_model(ModelName=server.endpoint)
    server.endpoint = ""


class Invoker:
    """Keep-alive ``http.client`` to the API: one SigV4-signed InvokeEndpoint replayed."""

    def __init__(self, server: Server) -> None:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        self.path = f"/endpoints/{server.endpoint}/invocations"
        request = AWSRequest(method="POST", url=server.url + self.path, data=PAYLOAD,
                             headers={"Content-Type": "text/csv", "Accept": "text/csv"})
        SigV4Auth(Credentials(server.akid, server.secret), "sagemaker", REGION).add_auth(request)
        self.headers = dict(request.prepare().headers.items())
        parts = urlsplit(server.url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                               timeout=120)

    def __call__(self) -> None:
        self.conn.request("POST", self.path, body=PAYLOAD, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200 or body != PAYLOAD:
            raise RuntimeError(f"invoke: {response.status} {body[:200]!r}")

    def close(self) -> None:
        self.conn.close()


# -- the creates (a process of their own) -----------------------------------------------------
def fire_creates(spec_json: str) -> int:
    """Build one client per create, say ``ready``, wait for a line on stdin, send every create
    at once, and DescribeEndpoint one after another until they are answered; print
    ``{"creates": [[sent, answered, error], ...], "describes": [seconds, ...]}``
    (``time.monotonic``, shared by every process on Linux)."""
    spec = json.loads(spec_json)
    server = Server("", None, spec["url"], spec["akid"], spec["secret"])  # type: ignore[arg-type]
    clients = [sagemaker(server) for _ in spec["requests"]]
    poller = sagemaker(server)
    poller.describe_endpoint(EndpointName=spec["endpoint"])
    describes: list[float] = []
    gate = threading.Barrier(len(clients) + 1)
    out: list[list[Any]] = [[0.0, 0.0, None] for _ in clients]

    def create(i: int) -> None:
        gate.wait()
        out[i][0] = time.monotonic()
        try:
            clients[i].create_training_job(**spec["requests"][i])
        except Exception as exc:
            out[i][2] = repr(exc)[:300]
        out[i][1] = time.monotonic()

    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    sys.stdin.readline()
    gate.wait()
    while any(thread.is_alive() for thread in threads):
        t0 = time.monotonic()
        poller.describe_endpoint(EndpointName=spec["endpoint"])
        describes.append(time.monotonic() - t0)
    for thread in threads:
        thread.join()
    print(json.dumps({"creates": out, "describes": describes}), flush=True)
    return 0


def training_request(name: str, image: str, archive: Path, out: Path) -> dict[str, Any]:
    return {
        "TrainingJobName": name, "RoleArn": ROLE,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "HyperParameters": {"sagemaker_submit_directory": json.dumps(archive.as_uri())},
        "OutputDataConfig": {"S3OutputPath": out.as_uri()},
        "ResourceConfig": {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


# -- one round -----------------------------------------------------------------------------------
def idle_latencies(server: Server, count: int) -> list[float]:
    invoke = Invoker(server)
    try:
        for _ in range(50):  # a warm connection and server
            invoke()
        clock, out = time.perf_counter, []
        for _ in range(count):
            t0 = clock()
            invoke()
            out.append(clock() - t0)
        return out
    finally:
        invoke.close()


def loaded_round(server: Server, image: str, archive: Path, scratch: Path, creates: int
                 ) -> dict[str, Any]:
    """Invoke without pause while ``creates`` CreateTrainingJob calls run at once; then wait
    for the jobs."""
    tag = uuid.uuid4().hex[:8]
    names = [f"bench-{server.mode}-{tag}-{i}" for i in range(creates)]
    spec = {"url": server.url, "akid": server.akid, "secret": server.secret,
            "endpoint": server.endpoint,
            "requests": [training_request(n, image, archive, scratch / "out") for n in names]}
    helper = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--fire-creates", json.dumps(spec)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(ROOT))
    assert helper.stdin is not None and helper.stdout is not None
    if helper.stdout.readline().strip() != b"ready":
        helper.kill()
        raise RuntimeError("the create helper did not start")
    invoke = Invoker(server)
    for _ in range(50):
        invoke()
    stop = threading.Event()
    samples: list[tuple[float, float]] = []

    def load() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            invoke()
            samples.append((t0, time.monotonic() - t0))

    invoking = threading.Thread(target=load)
    invoking.start()
    try:
        helper.stdin.write(b"go\n")
        helper.stdin.flush()
        fired = json.loads(helper.stdout.readline())
    finally:
        stop.set()
        invoking.join()
        invoke.close()
        helper.wait()
    timings = fired["creates"]
    errors = [t[2] for t in timings if t[2]]
    if errors:
        raise RuntimeError(f"{len(errors)} creates failed, the first: {errors[0]}")
    first, last = min(t[0] for t in timings), max(t[1] for t in timings)
    window = [latency for start, latency in samples if first <= start <= last]
    failed = wait_for_jobs(server, names)
    server.failed_jobs += failed
    return {"window_s": last - first, "invocations": window,
            "creates_s": [t[1] - t[0] for t in timings], "describes_s": fired["describes"]}


def wait_for_jobs(server: Server, names: list[str]) -> list[str]:
    """Wait until every job has ended; returns ``name: FailureReason`` of those that failed."""
    sm = sagemaker(server)
    deadline = time.monotonic() + JOBS_TIMEOUT_S
    pending, failed = set(names), []
    while pending:
        for name in sorted(pending):
            record = sm.describe_training_job(TrainingJobName=name)
            status = record["TrainingJobStatus"]
            if status in ("Completed", "Failed", "Stopped"):
                pending.discard(name)
                if status != "Completed":
                    failed.append(f"{name}: {status}: {record.get('FailureReason', '')}")
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} training jobs did not end")
        if pending:
            time.sleep(0.2)
    return failed


# -- inputs --------------------------------------------------------------------------------------
def write_archive(path: Path, megabytes: int) -> None:
    """A source archive gzip cannot shrink: random bytes plus the entry point."""
    data = os.urandom(megabytes * 1024 * 1024)
    entry = b"print('training')\n"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, body in (("train.py", entry), ("weights.bin", data)):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(body))


def project(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, text in (("serve", SERVE), ("train", TRAIN)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def docker_image(folder: Path) -> str:
    import bench_docker

    client = bench_docker.ensure_engine()
    try:
        context = {"Dockerfile": DOCKERFILE.format(base=bench_docker.BASE_IMAGE).encode(),
                   "serve": SERVE.encode(), "train": TRAIN.encode()}
        return bench_docker.build_context(client, "shipyard-bench/invoke-under-load", context)
    finally:
        client.close()


@contextmanager
def scoped_cleanup(runtime: str) -> Iterator[None]:
    try:
        yield
    finally:
        if runtime == "docker":
            import bench_docker

            client = bench_docker.ensure_engine()
            bench_docker.remove_scoped_containers(client)
            client.close()


# -- report --------------------------------------------------------------------------------------
def mode_report(server: Server) -> dict[str, Any]:
    idle, loaded = latency_summary(server.idle), latency_summary(server.loaded)
    ratio = loaded["p99_ms"] / idle["p99_ms"]
    what = MODES.get(server.mode) or f"{MODES['pool']}, {server.mode[4:]} threads"
    return {"what": what, "idle": idle, "under_creates": loaded,
            "p99_ratio": round(ratio, 2), "pass": ratio <= TARGET_P99_RATIO,
            "create_call": latency_summary(server.creates),
            # boto3, from the helper process: what a poller meanwhile waits.
            "describe_endpoint_meanwhile": latency_summary(server.describes),
            "burst_s": [round(b, 3) for b in server.bursts],
            "rounds": server.rounds, "failed_jobs": server.failed_jobs}


def machine(load_start: float) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for dist in ("boto3", "botocore", "uvicorn", "uvloop", "httptools"):
        try:
            packages[dist] = version(dist)
        except PackageNotFoundError:
            packages[dist] = "absent"
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "packages": packages,
            "loadavg_1m_at_start": load_start, "loadavg_1m_at_end": os.getloadavg()[0]}


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\nInvokeEndpoint under {result['creates']} concurrent CreateTrainingJob "
          f"({result['archive_mb']} MB archives), {result['runtime']} runtime, "
          f"supervisors as {result['supervisors']}s, "
          f"{m['cpus']} CPUs, load {m['loadavg_1m_at_start']:.2f} -> "
          f"{m['loadavg_1m_at_end']:.2f}")
    header = ("mode", "idle p50/p99 ms", "under creates p50/p99/max ms", "n", "p99 ratio",
              "create p50/max ms", "Describe meanwhile p50/max ms", "verdict")
    rows = []
    for mode, r in result["modes"].items():
        i, u, c, d = (r["idle"], r["under_creates"], r["create_call"],
                      r["describe_endpoint_meanwhile"])
        rows.append((mode, f"{i['p50_ms']:.2f}/{i['p99_ms']:.2f}",
                     f"{u['p50_ms']:.2f}/{u['p99_ms']:.2f}/{u['max_ms']:.1f}", str(u["n"]),
                     f"{r['p99_ratio']:.2f}x", f"{c['p50_ms']:.0f}/{c['max_ms']:.0f}",
                     f"{d['p50_ms']:.0f}/{d['max_ms']:.0f}",
                     ("PASS" if r["pass"] else "FAIL") if mode == "pool" else
                     "(before)" if mode == "inline" else ""))
    widths = [max(len(x[c]) for x in [header, *rows]) for c in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(f"\ntarget: pool mode p99 under creates <= {TARGET_P99_RATIO}x its idle p99")


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="bursts per mode (5)")
    parser.add_argument("--creates", type=int, default=20,
                        help="CreateTrainingJob calls per burst, all at once (20)")
    parser.add_argument("--archive-mb", type=int, default=50,
                        help="size of the source archive, MB of random bytes (50)")
    parser.add_argument("--idle", type=int, default=1000,
                        help="sequential idle invocations per round (1000)")
    parser.add_argument("--runtime", choices=("process", "docker"), default="process")
    parser.add_argument("--modes", default="pool,inline",
                        help="which servers to run (pool,inline): pool, inline, or pool<N> "
                        "for the pool with N threads (the app's HANDLER_THREADS otherwise)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"result file ({RESULTS})")
    parser.add_argument("--supervisors", choices=("thread", "process"), default="thread",
                        help="the jobs' supervisors as threads of the server, as deployed, or "
                        "as processes of their own, to leave the server's GIL to the API "
                        "(thread)")
    parser.add_argument("--serve", nargs=3, metavar=("DATA_DIR", "MODE", "SUPERVISORS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--fire-creates", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve_mode(*args.serve)
    if args.fire_creates:
        return fire_creates(args.fire_creates)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES and not (m.startswith("pool") and m[4:].isdigit()
                                                 and int(m[4:]) > 0) for m in modes):
        parser.error(f"--modes: a comma-separated list of {', '.join(MODES)} or pool<N>")
    if min(args.rounds, args.creates, args.archive_mb, args.idle) < 1:
        parser.error("counts must be >= 1")

    load_start = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="shipyard-bench-offloop-"))
    servers: list[Server] = []
    try:
        with scoped_cleanup(args.runtime):
            image = (str(project(scratch / "project")) if args.runtime == "process"
                     else docker_image(scratch))
            archive = scratch / "sourcedir.tar.gz"
            write_archive(archive, args.archive_mb)
            env = {**os.environ, "SHIPYARD_RUNTIME": args.runtime,
                   "SHIPYARD_SEPARATE_DATA_PLANE": "false", "SHIPYARD_FILE_ROOTS": str(scratch),
                   "SHIPYARD_SCOPE": "shipyard-bench", "PYTHONUNBUFFERED": "1"}
            for mode in modes:
                servers.append(start_server(mode, scratch / mode, env, args.supervisors))
                deploy(servers[-1], image)
            for r in range(args.rounds):
                # Rotate the order, so drift on a shared machine hits every mode alike.
                for server in servers[r % len(servers):] + servers[:r % len(servers)]:
                    idle = idle_latencies(server, args.idle)
                    got = loaded_round(server, image, archive, scratch, args.creates)
                    server.idle += idle
                    server.loaded += got["invocations"]
                    server.creates += got["creates_s"]
                    server.describes += got["describes_s"]
                    server.bursts.append(got["window_s"])
                    server.rounds.append({
                        "idle_p99_ms": latency_summary(idle)["p99_ms"],
                        "under_creates": latency_summary(got["invocations"]),
                        "burst_s": round(got["window_s"], 3)})
                    u = server.rounds[-1]["under_creates"]
                    print(f"round {r + 1} {server.mode}: idle p99 "
                          f"{server.rounds[-1]['idle_p99_ms']:.2f} ms, under creates p99 "
                          f"{u['p99_ms']:.2f} ms (max {u['max_ms']:.1f}, n {u['n']}), burst "
                          f"{got['window_s']:.2f} s", flush=True)
        result = {
            "benchmark": "invoke_under_load",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(load_start),
            "command": " ".join([".venv/bin/python benchmarks/invoke_under_load.py",
                                 *sys.argv[1:]]),
            "runtime": args.runtime, "supervisors": args.supervisors,
            "creates": args.creates, "archive_mb": args.archive_mb,
            "archive_bytes": archive.stat().st_size, "rounds": args.rounds,
            "target": f"pool: InvokeEndpoint p99 under creates <= {TARGET_P99_RATIO}x idle p99",
            "modes": {s.mode: mode_report(s) for s in servers},
        }
        result["pass"] = result["modes"].get("pool", {}).get("pass", False)
        print_table(result)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
        return 0
    finally:
        for server in servers:
            if server.endpoint:
                with contextlib.suppress(Exception):
                    undeploy(server)
            stop_process(server.proc)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
