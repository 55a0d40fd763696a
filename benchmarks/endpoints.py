"""Endpoints and transform through the control plane, against the bare-Docker floor.

Three figures of issue 4, each measured in the same run, on the same machine, with the same
image (``FROM shipyard/base:bookworm-py311`` + Shipyard's toolkit wheel) and the same model
(``model.tar.gz``: ``model.json`` holding a linear model and ``code/inference.py``):

1. Deploy -> first successful invoke. Floor: what ``docker run -d -p 127.0.0.1::8080 -v
   <model dir>:/opt/ml/model:ro IMAGE serve`` does, through the Docker SDK (create, start,
   inspect for the port), then ``POST /invocations`` polled until the first correct answer.
   Shipyard: CreateModel + CreateEndpointConfig + CreateEndpoint through the API with boto3,
   then InvokeEndpoint (boto3 ``sagemaker-runtime``) polled until the first correct answer.
   Target: Shipyard <= floor + 0.3 s (medians). SageMaker SDK local mode: 35 s.
2. Invoke latency of one small CSV row, sequential requests over keep-alive connections:
   (a) straight to the endpoint container's published port (``http.client``); (b) through
   Shipyard's ``POST /endpoints/<name>/invocations`` with the same ``http.client``
   connection, the request SigV4-signed once by botocore and replayed; (c) boto3's
   ``sagemaker-runtime`` ``invoke_endpoint`` (boto3's own client cost included). The
   requests go in 20 blocks of 100 of each kind, the order rotated from block to block.
   Target: (b) p50 <= 1.5x (a) p50. SDK local mode: 50 ms vs 2.2 ms.
3. A 10,000-line CSV through CreateTransformJob (SplitType Line, MultiRecord, AssembleWith
   Line, file:// input and output), create -> Completed, vs the floor: the same container
   started by hand, ``/ping`` polled, the whole file POSTed in one request and the answer
   written. Target: <= 1.5 s. SDK local mode: 7.2 s.

Shipyard runs as deployed: the API server (``python -m shipyard.api.server``'s ``main``) in
its own process with its own data directory and the Docker runtime. The only addition is a
few timing marks (a line appended to a file when a deployment or transform step starts and
ends: extraction, container start, health check...) for the phase breakdown.

Run from the repository root::

    .venv/bin/python benchmarks/endpoints.py [--runs 7] [--transform-runs 5] [--requests 2000]

Everything the benchmark creates carries ``org.shipyard.managed=true`` and
``org.shipyard.scope=shipyard-bench``; at the end it removes only containers with that scope
and stops only the server it started (by pid). The image is kept, tagged by a hash of its
build context, so the next run reuses it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import http.client
import io
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_docker
from bench_docker import BASE_IMAGE, LABELS, ROOT, SCOPE
from bench_stats import latency_summary

RESULTS = ROOT / "benchmarks" / "results" / "endpoints.json"
WHEEL_CACHE = ROOT / ".cache" / "wheels"
REGION = "us-east-1"
ROLE = "arn:aws:iam::000000000000:role/shipyard-bench"
SERVING_PORT = 8080
#: Targets of issue 4, and what SageMaker's SDK local mode measured there.
TARGET_DEPLOY_OVER_FLOOR_S = 0.3
TARGET_INVOKE_P50_RATIO = 1.5
TARGET_TRANSFORM_S = 1.5
SDK_LOCAL = {"deploy_s": 35.0, "invoke_p50_ms": 50.0, "direct_p50_ms": 2.2, "transform_s": 7.2}
TRANSFORM_LINES = 10_000
STARTUP_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 120.0

#: The model: y = w . x + b over four features.
WEIGHTS = (0.5, -1.25, 2.0, 0.75)
BIAS = 0.1
PAYLOAD = b"1.0,2.0,3.0,4.0\n"
CSV = "text/csv"

INFERENCE_PY = """\
# A linear model, written for SageMaker's inference toolkit (model_fn / predict_fn); the
# toolkit's default codecs decode the CSV rows and encode the answer as CSV (Accept).
import json
import os


def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.json")) as fh:
        return json.load(fh)


def predict_fn(data, model):
    weights, bias = model["weights"], model["bias"]
    return [bias + sum(w * x for w, x in zip(weights, row)) for row in data]
"""

DOCKERFILE_BODY = "ENV PYTHONUNBUFFERED=1\n"

#: Deployment and transform steps timed in the server (module, attribute, mark name).
MARKED = (
    ("shipyard.control.endpoints.deployments", "EndpointManager.create", "ep.create"),
    ("shipyard.control.endpoints.deployments", "prepare_model_dir", "ep.extract"),
    ("shipyard.control.endpoints.deployments", "start_instance", "ep.start_instance"),
    ("shipyard.control.endpoints.deployments", "wait_healthy", "ep.health"),
    ("shipyard.control.endpoints.deployments", "EndpointManager._commit", "ep.commit"),
    ("shipyard.runtimes.docker", "DockerRuntime.start", "docker.start"),
    ("shipyard.control.endpoints.serving", "ping", "ping"),
    ("shipyard.control.transform.job", "TransformJob.run", "tj.run"),
    ("shipyard.control.transform.job", "prepare_model_dir", "tj.extract"),
    ("shipyard.control.transform.job", "start_instance", "tj.start_instance"),
    ("shipyard.control.transform.job", "TransformJob._stage", "tj.stage"),
    ("shipyard.control.transform.job", "wait_healthy", "tj.health"),
    ("shipyard.control.transform.job", "_execution_parameters", "tj.exec_params"),
    ("shipyard.control.transform.job", "_Dispatcher.run", "tj.dispatch"),
    ("shipyard.control.transform.job", "TransformJob._stop_instances", "tj.stop"),
    ("shipyard.control.transform.job", "TransformJob._complete", "tj.complete"),
)


# -- model, image ------------------------------------------------------------------------------
def predict(row: list[float]) -> float:
    """What the model answers for one row (the same float operations, in the same order)."""
    return BIAS + sum(w * x for w, x in zip(WEIGHTS, row, strict=True))


def rows_of(text: str) -> list[list[float]]:
    return [[float(v) for v in line.split(",")] for line in text.splitlines() if line]


def correct(answer: bytes, inputs: list[list[float]]) -> bool:
    """The CSV answer holds one prediction per input row."""
    try:
        values = [float(line) for line in answer.decode().splitlines() if line]
    except ValueError:
        return False
    if len(values) != len(inputs):
        return False
    return all(abs(v - predict(row)) <= 1e-9 * max(1.0, abs(v))
               for v, row in zip(values, inputs, strict=True))


def write_model(scratch: Path) -> tuple[Path, Path]:
    """``model.tar.gz`` (for Shipyard) and the same files extracted (for the floor)."""
    files = {"model.json": json.dumps({"weights": WEIGHTS, "bias": BIAS}).encode(),
             "code/inference.py": INFERENCE_PY.encode()}
    model_dir = scratch / "model"
    for name, data in files.items():
        (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / name).write_bytes(data)
    tarball = scratch / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return tarball, model_dir


ensure_engine = bench_docker.ensure_engine


def toolkit_wheel() -> Path:
    """A wheel of this checkout, cached by a hash of its sources (the toolkit is stdlib-only,
    so it installs with --no-deps); the same cache the tests' images use."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")):
        digest.update(path.read_bytes())
    digest.update((ROOT / "pyproject.toml").read_bytes())
    out = WHEEL_CACHE / f"shipyard-{digest.hexdigest()[:12]}"
    wheels = sorted(out.glob("shipyard-*.whl")) if out.exists() else []
    if wheels:
        return wheels[0]
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(ROOT)], check=True)
    return next(out.glob("shipyard-*.whl"))


def build_image(client: Any) -> str:
    """The serving image, tagged by a hash of its context so an unchanged one is built once."""

    wheel = toolkit_wheel()
    dockerfile = (f"FROM {BASE_IMAGE}\nCOPY wheels /tmp/wheels\n"
                  "RUN python3 -m pip install -q --no-index --find-links /tmp/wheels "
                  "--break-system-packages shipyard && rm -rf /tmp/wheels\n" + DOCKERFILE_BODY)
    context = {"Dockerfile": dockerfile.encode(), f"wheels/{wheel.name}": wheel.read_bytes()}
    return bench_docker.build_context(client, "shipyard-bench/endpoints", context)


remove_scoped_containers = bench_docker.remove_scoped_containers


# -- the server --------------------------------------------------------------------------------
@dataclass
class Server:
    url: str
    pid: int
    akid: str
    secret: str
    marks: Path
    #: The data plane's process: it answers InvokeEndpoint (``api.dataplane``).
    dataplane_pid: int = 0
    proc: subprocess.Popen[bytes] | None = None
    data_dir: Path | None = None
    log: Path | None = None

    def cpu(self) -> float:
        """CPU seconds of the server and its data plane together."""
        return cpu_seconds(self.pid) + (cpu_seconds(self.dataplane_pid)
                                        if self.dataplane_pid else 0.0)

    def new_marks(self, offset: int) -> tuple[list[tuple[str, float, float]], int]:
        """Marks ``(label, start, end)`` appended since ``offset`` (bytes), and the new offset."""
        with open(self.marks, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
        complete = data[:data.rfind(b"\n") + 1]
        marks = []
        for line in complete.splitlines():
            label, start, end = json.loads(line)
            marks.append((str(label), float(start), float(end)))
        return marks, offset + len(complete)


def serve_with_marks(data_dir: str, marks: str) -> int:
    """The API server, as ``python -m shipyard.api.server`` runs it, plus timing marks."""
    import functools
    import importlib
    import threading

    sys.path.insert(0, str(ROOT / "src"))
    out = open(marks, "a", buffering=1)  # noqa: SIM115 - open for the life of the process
    lock = threading.Lock()
    clock = time.time

    def wrap(module: str, attr: str, label: str) -> None:
        owner: Any = importlib.import_module(module)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, name)

        @functools.wraps(original)
        def marked(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return original(*args, **kwargs)
            finally:
                end = clock()
                with lock:
                    out.write(f'["{label}",{start!r},{end!r}]\n')
        setattr(owner, name, marked)

    for module, attr, label in MARKED:
        wrap(module, attr, label)
    from shipyard.api import server

    return int(server.main(["--data-dir", data_dir, "--host", "127.0.0.1", "--port", "0"]))


def start_server(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    """The server in its own process (Docker runtime, bench scope): (process, url, data
    plane pid). A data plane already running for ``data_dir`` is reused, as on a restart."""
    marks = data_dir / "marks.jsonl"
    env = {**os.environ, "SHIPYARD_RUNTIME": "docker", "SHIPYARD_SCOPE": SCOPE,
           "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, str(Path(__file__).resolve()), "--serve-with-marks",
            str(data_dir), str(marks)]
    info = data_dir / "server.json"
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=env, cwd=str(ROOT))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            data = json.loads(info.read_text())
            if data.get("pid") == proc.pid:
                break
        except (OSError, ValueError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"the Shipyard server did not start; its log:\n{tail}")
        time.sleep(0.02)
    plane = json.loads((data_dir / "dataplane.json").read_text())
    return proc, str(data["url"]), int(plane["pid"])


def stop_process(proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signum)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def shipyard_server(data_dir: Path, log: Path) -> Iterator[Server]:
    """The server and its data plane; both stopped by pid after."""
    sys.path.insert(0, str(ROOT / "src"))
    from shipyard.api.credentials import load_or_create

    data_dir.mkdir(parents=True, exist_ok=True)
    marks = data_dir / "marks.jsonl"
    marks.touch()
    proc, url, dataplane_pid = start_server(data_dir, log)
    akid, secret = load_or_create(data_dir).default
    server = Server(url, proc.pid, akid, secret, marks, dataplane_pid=dataplane_pid, proc=proc,
                    data_dir=data_dir, log=log)
    try:
        yield server
    finally:
        if server.proc is not None:
            stop_process(server.proc)
        # SIGTERM leaves the data plane serving for a next server: stop it too.
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.dataplane_pid, signal.SIGTERM)


def clients(server: Server) -> tuple[Any, Any]:
    """boto3 ``sagemaker`` and ``sagemaker-runtime`` clients of the server (no retries)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(aws_access_key_id=server.akid,
                                    aws_secret_access_key=server.secret, region_name=REGION)
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    return (session.client("sagemaker", endpoint_url=server.url, config=config),
            session.client("sagemaker-runtime", endpoint_url=server.url, config=config))


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- stats -------------------------------------------------------------------------------------
def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = (statistics.quantiles(ordered, n=10, method="inclusive")[8]
           if len(ordered) > 1 else ordered[0])
    return {"median": statistics.median(ordered), "p90": p90, "min": ordered[0],
            "max": ordered[-1], "mean": statistics.fmean(ordered), "n": len(ordered)}


def spans(marks: list[tuple[str, float, float]]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for label, start, end in marks:
        out.setdefault(label, []).append((start, end))
    return out


# -- 1. deploy -> first invoke ------------------------------------------------------------------
def poll_direct(port: int, payload: bytes, inputs: list[list[float]], poll: float,
                deadline: float) -> int:
    """POST /invocations on a fresh connection until a correct answer; returns attempts."""
    attempts = 0
    while True:
        attempts += 1
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("POST", "/invocations", body=payload,
                         headers={"Content-Type": CSV, "Accept": CSV})
            response = conn.getresponse()
            body = response.read()
            if response.status == 200 and correct(body, inputs):
                return attempts
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no correct answer on port {port}")
        time.sleep(poll)


def start_floor_container(api: Any, image: str, model_dir: Path) -> tuple[str, int, float]:
    """``docker run -d -p 127.0.0.1::8080 -v <model dir>:/opt/ml/model:ro IMAGE serve``;
    returns the name, the published port and when start returned (epoch s)."""
    name = f"shipyard-bench-floor-{uuid.uuid4().hex[:12]}"
    host_config = api.create_host_config(
        binds={str(model_dir): {"bind": "/opt/ml/model", "mode": "ro"}},
        port_bindings={SERVING_PORT: ("127.0.0.1", None)})
    api.create_container(image, command=["serve"], name=name, labels=LABELS,
                         ports=[SERVING_PORT], host_config=host_config, detach=True)
    api.start(name)
    started = time.time()
    ports = api.inspect_container(name)["NetworkSettings"]["Ports"]
    return name, int(ports[f"{SERVING_PORT}/tcp"][0]["HostPort"]), started


def floor_deploy(api: Any, image: str, model_dir: Path, poll: float) -> dict[str, float]:
    inputs = rows_of(PAYLOAD.decode())
    t0 = time.time()
    name, port, started = start_floor_container(api, image, model_dir)
    t_port = time.time()
    attempts = poll_direct(port, PAYLOAD, inputs, poll, time.monotonic() + RUN_TIMEOUT_S)
    t_answer = time.time()
    api.remove_container(name, force=True, v=True)
    return {"wall_s": t_answer - t0, "container_start": started - t0,
            "port_lookup": t_port - started, "first_answer": t_answer - t_port,
            "attempts": attempts}


def create_endpoint(sm: Any, name: str, image: str, tarball: Path, count: int = 1) -> None:
    sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": image, "ModelDataUrl": tarball.as_uri()})
    sm.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": f"{name}-model",
        "InitialInstanceCount": count, "InstanceType": "local"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def poll_invoke(smr: Any, name: str, inputs: list[list[float]], poll: float,
                deadline: float) -> int:
    """InvokeEndpoint until a correct answer (ValidationError while it is Creating)."""
    from botocore.exceptions import ClientError

    attempts = 0
    while True:
        attempts += 1
        try:
            out = smr.invoke_endpoint(EndpointName=name, Body=PAYLOAD, ContentType=CSV,
                                      Accept=CSV)
            if correct(out["Body"].read(), inputs):
                return attempts
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ValidationError":
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"endpoint {name} never answered correctly")
        time.sleep(poll)


def delete_endpoint(sm: Any, name: str) -> None:
    """DeleteEndpoint (+ config, model), waiting until it is gone (its container removed)."""
    from botocore.exceptions import ClientError

    sm.delete_endpoint(EndpointName=name)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            sm.describe_endpoint(EndpointName=name)
        except ClientError:
            break
        time.sleep(0.05)
    sm.delete_endpoint_config(EndpointConfigName=f"{name}-config")
    sm.delete_model(ModelName=f"{name}-model")


def shipyard_deploy(server: Server, sm: Any, smr: Any, image: str, tarball: Path,
                    poll: float, offset: int) -> tuple[dict[str, float], int]:
    inputs = rows_of(PAYLOAD.decode())
    name = f"bench-ep-{uuid.uuid4().hex[:10]}"
    t0 = time.time()
    create_endpoint(sm, name, image, tarball)
    t_created = time.time()
    attempts = poll_invoke(smr, name, inputs, poll, time.monotonic() + RUN_TIMEOUT_S)
    t_answer = time.time()
    marks, offset = server.new_marks(offset)
    s = spans(marks)
    create, extract = s["ep.create"][0], s["ep.extract"][0]
    start, docker_start = s["ep.start_instance"][0], s["docker.start"][0]
    health, commit = s["ep.health"][0], s["ep.commit"][0]
    pings = [p for p in s.get("ping", []) if health[0] <= p[0] <= health[1]]
    run = {
        "wall_s": t_answer - t0,
        # Client-side: the three boto3 calls, CreateModel to CreateEndpoint's answer.
        "create_calls": t_created - t0,
        # CreateEndpoint's handler started -> its deployment thread starts extracting.
        "handler_to_extract": extract[0] - create[0],
        "model_extraction": extract[1] - extract[0],
        "container_create_start": docker_start[1] - docker_start[0],
        "port_lookup": start[1] - docker_start[1],
        "health_check": health[1] - health[0],
        "commit_in_service": commit[1] - commit[0],
        # InService written -> the client's first correct InvokeEndpoint answer.
        "first_invoke": t_answer - commit[1],
        "pings": len(pings),
        "invoke_attempts": attempts,
    }
    if len(pings) >= 2:
        # How long before the passing ping the one before it was sent: the backoff's gap.
        run["last_ping_gap"] = pings[-1][0] - pings[-2][1]
    delete_endpoint(sm, name)
    _, offset = server.new_marks(offset)
    return run, offset


# -- 2. invoke latency ---------------------------------------------------------------------------
class Direct:
    """(a) keep-alive ``http.client`` straight to the container's published port (or, for
    comparison, to its address on the Docker bridge, which skips the engine's port proxy)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.headers = {"Content-Type": CSV, "Accept": CSV}

    def __call__(self) -> bytes:
        self.conn.request("POST", "/invocations", body=PAYLOAD, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"direct: {response.status} {body[:200]!r}")
        return body


class PreSigned:
    """(b) the same connection type to the API, one SigV4-signed request replayed."""

    def __init__(self, server: Server, endpoint: str) -> None:
        from urllib.parse import urlsplit

        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        path = f"/endpoints/{endpoint}/invocations"
        request = AWSRequest(method="POST", url=server.url + path, data=PAYLOAD,
                             headers={"Content-Type": CSV, "Accept": CSV})
        SigV4Auth(Credentials(server.akid, server.secret), "sagemaker", REGION).add_auth(request)
        self.headers = dict(request.prepare().headers.items())
        self.path = path
        parts = urlsplit(server.url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                               timeout=30)

    def __call__(self) -> bytes:
        self.conn.request("POST", self.path, body=PAYLOAD, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"pre-signed: {response.status} {body[:200]!r}")
        return body


class Boto3:
    """(c) boto3's ``sagemaker-runtime`` client."""

    def __init__(self, smr: Any, endpoint: str) -> None:
        self.smr = smr
        self.endpoint = endpoint

    def __call__(self) -> bytes:
        out = self.smr.invoke_endpoint(EndpointName=self.endpoint, Body=PAYLOAD,
                                       ContentType=CSV, Accept=CSV)
        return bytes(out["Body"].read())


def endpoint_address(api: Any, endpoint: str) -> tuple[int, str]:
    """The endpoint container's published port, and its address on the Docker bridge."""
    from shipyard.contract.labels import JOB_NAME_LABEL

    found = api.containers(filters={"label": [f"{JOB_NAME_LABEL}={endpoint}",
                                              f"org.shipyard.scope={SCOPE}"]})
    if len(found) != 1:
        raise RuntimeError(f"expected one container for {endpoint}, found {len(found)}")
    network = api.inspect_container(found[0]["Id"])["NetworkSettings"]
    return int(network["Ports"][f"{SERVING_PORT}/tcp"][0]["HostPort"]), network["IPAddress"]


def invoke_latency(server: Server, sm: Any, smr: Any, api: Any, image: str, tarball: Path,
                   requests: int, rounds: int, poll: float) -> dict[str, Any]:
    inputs = rows_of(PAYLOAD.decode())
    name = f"bench-latency-{uuid.uuid4().hex[:8]}"
    create_endpoint(sm, name, image, tarball)
    poll_invoke(smr, name, inputs, poll, time.monotonic() + RUN_TIMEOUT_S)
    port, bridge_ip = endpoint_address(api, name)
    callers: dict[str, Callable[[], bytes]] = {
        "direct": Direct(port),
        "api_presigned": PreSigned(server, name),
        "boto3": Boto3(smr, name),
    }
    if bridge_ip:
        callers["direct_bridge_ip"] = Direct(SERVING_PORT, bridge_ip)
    expected = callers["direct"]()
    if not correct(expected, inputs):
        raise RuntimeError(f"the endpoint answered {expected!r}")
    for label, call in callers.items():
        for _ in range(100):  # warm connections, caches and the server's pool
            if call() != expected:
                raise RuntimeError(f"{label}: a different answer")
    latencies: dict[str, list[float]] = {k: [] for k in callers}
    server_cpu: dict[str, float] = dict.fromkeys(callers, 0.0)
    client_cpu: dict[str, float] = dict.fromkeys(callers, 0.0)
    per_round = max(1, requests // rounds)
    clock = time.perf_counter
    order = list(callers)
    for r in range(rounds):
        # Rotate the order, so drift on a shared machine hits all three alike.
        for label in order[r % len(order):] + order[:r % len(order)]:
            call, out = callers[label], latencies[label]
            cpu0, own0 = server.cpu(), time.process_time()
            for _ in range(per_round):
                t0 = clock()
                body = call()
                out.append(clock() - t0)
                if body != expected:
                    raise RuntimeError(f"{label}: a different answer {body!r}")
            server_cpu[label] += server.cpu() - cpu0
            client_cpu[label] += time.process_time() - own0
    delete_endpoint(sm, name)
    result: dict[str, Any] = {"requests_each": per_round * rounds, "rounds": rounds,
                              "payload": PAYLOAD.decode(), "answer": expected.decode()}
    for label in callers:
        n = len(latencies[label])
        result[label] = {**latency_summary(latencies[label]),
                         "server_cpu_us_per_req": round(server_cpu[label] / n * 1e6, 1),
                         "client_cpu_us_per_req": round(client_cpu[label] / n * 1e6, 1)}
    ratio = result["api_presigned"]["p50_ms"] / result["direct"]["p50_ms"]
    result["p50_ratio_presigned_to_direct"] = round(ratio, 3)
    result["p50_added_ms"] = round(result["api_presigned"]["p50_ms"]
                                   - result["direct"]["p50_ms"], 3)
    result["target"] = f"api p50 <= {TARGET_INVOKE_P50_RATIO}x direct p50"
    result["pass"] = ratio <= TARGET_INVOKE_P50_RATIO
    return result


# -- 3. transform --------------------------------------------------------------------------------
def restart_under_load(server: Server, sm: Any, image: str, tarball: Path,
                       clients_n: int = 4, settle_s: float = 1.5) -> dict[str, Any]:
    """InvokeEndpoint from ``clients_n`` threads without pause (boto3, retries off) while the
    server is killed (SIGKILL), started again, stopped (SIGTERM) and started again. Target:
    no request fails; reported with the longest wait for an answer and the time the control
    plane was away each time."""
    import threading

    import boto3
    from botocore.config import Config

    assert server.proc is not None and server.data_dir is not None and server.log is not None
    name = f"bench-restart-{uuid.uuid4().hex[:8]}"
    create_endpoint(sm, name, image, tarball, count=2)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name,
                                              WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    session = boto3.session.Session(aws_access_key_id=server.akid,
                                    aws_secret_access_key=server.secret, region_name=REGION)
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    stop = threading.Event()
    ok = [0] * clients_n
    failed: list[str] = []
    slowest = [0.0] * clients_n

    def load(i: int) -> None:
        rt = session.client("sagemaker-runtime", endpoint_url=server.url, config=config)
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                rt.invoke_endpoint(EndpointName=name, Body=PAYLOAD, ContentType="text/csv")
                ok[i] += 1
            except Exception as exc:
                failed.append(repr(exc)[:200])
            slowest[i] = max(slowest[i], time.perf_counter() - t0)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(clients_n)]
    for thread in threads:
        thread.start()
    away: dict[str, float] = {}
    try:
        time.sleep(settle_s)
        for label, signum in (("sigkill", signal.SIGKILL), ("sigterm", signal.SIGTERM)):
            began = time.perf_counter()
            stop_process(server.proc, signum)
            server.proc, url, server.dataplane_pid = start_server(server.data_dir, server.log)
            away[label] = time.perf_counter() - began
            server.pid = server.proc.pid
            if url != server.url:
                raise RuntimeError(f"the restarted server listens elsewhere: {url}")
            time.sleep(settle_s)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    delete_endpoint(sm, name)
    return {"clients": clients_n, "requests": sum(ok) + len(failed), "failed": len(failed),
            "failures": failed[:5], "slowest_answer_s": round(max(slowest), 4),
            "control_plane_away_s": {k: round(v, 3) for k, v in away.items()},
            "target": "0 failed requests while the server restarts (SIGKILL, SIGTERM)",
            "pass": not failed}


def transform_input(scratch: Path) -> tuple[Path, list[list[float]]]:
    folder = scratch / "transform-in"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{i % 97}.5,{i % 13},{(i * 7) % 31}.25,{i % 5}" for i in range(TRANSFORM_LINES)]
    (folder / "rows.csv").write_text("".join(f"{line}\n" for line in lines))
    return folder, rows_of("\n".join(lines))


def floor_transform(api: Any, image: str, model_dir: Path, data: Path, out: Path,
                    inputs: list[list[float]], poll: float) -> dict[str, float]:
    """The same container by hand: run, /ping until 200, POST the whole file, write the answer."""
    t0 = time.time()
    name, port, started = start_floor_container(api, image, model_dir)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/ping")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                break
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise TimeoutError("the floor container never answered /ping")
        time.sleep(poll)
    t_ready = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/invocations", body=data.read_bytes(),
                 headers={"Content-Type": CSV, "Accept": CSV})
    response = conn.getresponse()
    answer = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"floor transform: {response.status} {answer[:200]!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(answer)
    t_written = time.time()
    api.remove_container(name, force=True, v=True)
    t_removed = time.time()
    if not correct(out.read_bytes(), inputs):
        raise RuntimeError("the floor transform's answer is wrong")
    return {"wall_s": t_written - t0, "wall_with_rm_s": t_removed - t0,
            "container_start": started - t0, "ready": t_ready - started,
            "request": t_written - t_ready, "rm_f": t_removed - t_written}


def shipyard_transform(server: Server, sm: Any, model: str, in_dir: Path, out_root: Path,
                       inputs: list[list[float]], poll: float, offset: int
                       ) -> tuple[dict[str, float], int]:
    name = f"bench-tj-{uuid.uuid4().hex[:10]}"
    out_dir = out_root / name
    request = {
        "TransformJobName": name, "ModelName": model, "BatchStrategy": "MultiRecord",
        "TransformInput": {"DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": in_dir.as_uri()}},
            "ContentType": CSV, "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": out_dir.as_uri(), "AssembleWith": "Line",
                            "Accept": CSV},
        "TransformResources": {"InstanceType": "local", "InstanceCount": 1},
    }
    t0 = time.time()
    sm.create_transform_job(**request)
    t_created = time.time()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        record = sm.describe_transform_job(TransformJobName=name)
        if record["TransformJobStatus"] in ("Completed", "Failed", "Stopped"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"transform job {name} still {record['TransformJobStatus']}")
        time.sleep(poll)
    t_done = time.time()
    if record["TransformJobStatus"] != "Completed":
        raise RuntimeError(f"transform job {name} ended {record['TransformJobStatus']}: "
                           f"{record.get('FailureReason', '')}")
    output = out_dir / "rows.csv.out"
    if not correct(output.read_bytes(), inputs):
        raise RuntimeError(f"{output} does not hold the {len(inputs)} predictions")
    # The driver may still be stopping the containers after the status is final: wait (out
    # of the timed region) until it returns, so the next run starts on a quiet engine.
    marks: list[tuple[str, float, float]] = []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        more, offset = server.new_marks(offset)
        marks += more
        if any(m[0] == "tj.run" for m in marks) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    s = spans(marks)
    run_, extract = s["tj.run"][0], s["tj.extract"][0]
    docker_start, start = s["docker.start"][0], s["tj.start_instance"][0]
    stage, health = s["tj.stage"][0], s["tj.health"][0]
    params, dispatch = s["tj.exec_params"][0], s["tj.dispatch"][0]
    stop, complete = s["tj.stop"][0], s["tj.complete"][0]
    pings = [p for p in s.get("ping", []) if health[0] <= p[0] <= health[1]]
    result = {
        "wall_s": t_done - t0,
        "create_call": t_created - t0,
        # From the create call's start to the driver thread's first step.
        "create_to_driver": run_[0] - t0,
        "model_extraction": extract[1] - extract[0],
        "container_create_start": docker_start[1] - docker_start[0],
        "port_lookup": start[1] - docker_start[1],
        "stage_input": stage[1] - stage[0],
        "health_check": health[1] - health[0],
        "execution_parameters": params[1] - params[0],
        "dispatch_request_write": dispatch[1] - dispatch[0],
        "stop_containers": stop[1] - stop[0],
        "complete": complete[1] - complete[0],
        "detect_completed": t_done - complete[1],
        "pings": len(pings),
    }
    shutil.rmtree(out_dir, ignore_errors=True)
    return result, offset


# -- report --------------------------------------------------------------------------------------
def _docker_version() -> str:
    proc = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                          check=False, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("boto3", "botocore", "uvicorn", "uvloop", "httptools", "docker"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "absent"
    return out


def machine(load_start: float) -> dict[str, Any]:
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "memory": mem, "platform": platform.platform(),
            "python": platform.python_version(), "docker": _docker_version(),
            "packages": _versions(), "loadavg_1m_at_start": load_start,
            "loadavg_1m_at_end": os.getloadavg()[0]}


def deploy_report(floor: list[dict[str, float]], ship: list[dict[str, float]],
                  warmups: int) -> dict[str, Any]:
    floor_s = summary([r["wall_s"] for r in floor])
    ship_s = summary([r["wall_s"] for r in ship])
    overhead = ship_s["median"] - floor_s["median"]
    keys = [k for k in ship[0] if k != "wall_s"]
    return {
        "runs": len(ship), "warmups": warmups,
        "floor_s": floor_s, "shipyard_s": ship_s, "overhead_s": overhead,
        "target": f"Shipyard <= floor + {TARGET_DEPLOY_OVER_FLOOR_S} s (medians)",
        "pass": overhead <= TARGET_DEPLOY_OVER_FLOOR_S,
        "shipyard_breakdown_s": {k: summary([r[k] for r in ship if k in r]) for k in keys
                                 if any(k in r for r in ship)},
        "floor_breakdown_s": {k: summary([r[k] for r in floor])
                              for k in floor[0] if k != "wall_s"},
        "sdk_local_mode_s": SDK_LOCAL["deploy_s"],
        "samples": {"floor": floor, "shipyard": ship},
    }


def transform_report(floor: list[dict[str, float]], ship: list[dict[str, float]],
                     warmups: int) -> dict[str, Any]:
    ship_s = summary([r["wall_s"] for r in ship])
    return {
        "runs": len(ship), "warmups": warmups, "lines": TRANSFORM_LINES,
        "shipyard_s": ship_s,
        "floor_s": summary([r["wall_s"] for r in floor]),
        "floor_with_rm_s": summary([r["wall_with_rm_s"] for r in floor]),
        "target": f"create -> Completed <= {TARGET_TRANSFORM_S} s (median)",
        "pass": ship_s["median"] <= TARGET_TRANSFORM_S,
        "shipyard_breakdown_s": {k: summary([r[k] for r in ship])
                                 for k in ship[0] if k != "wall_s"},
        "floor_breakdown_s": {k: summary([r[k] for r in floor])
                              for k in floor[0] if k not in ("wall_s", "wall_with_rm_s")},
        "sdk_local_mode_s": SDK_LOCAL["transform_s"],
        "samples": {"floor": floor, "shipyard": ship},
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_table(result: dict[str, Any]) -> None:
    d, i, t = result["deploy"], result["invoke"], result["transform"]
    m = result["machine"]
    print(f"\nendpoints and transform: {m['cpus']} CPUs, docker {m['docker']}, "
          f"load {m['loadavg_1m_at_start']:.2f} -> {m['loadavg_1m_at_end']:.2f}")
    rows = [
        ("deploy -> first invoke, median s", f"{d['shipyard_s']['median']:.3f}",
         f"{d['floor_s']['median']:.3f} (floor)",
         f"<= floor + {TARGET_DEPLOY_OVER_FLOOR_S}", verdict(d["pass"])),
        ("  overhead over floor, s", f"{d['overhead_s']:+.3f}", "", "", ""),
        ("invoke p50 ms, API pre-signed vs direct", f"{i['api_presigned']['p50_ms']:.3f}",
         f"{i['direct']['p50_ms']:.3f} (direct)", f"<= {TARGET_INVOKE_P50_RATIO}x",
         f"{verdict(i['pass'])} ({i['p50_ratio_presigned_to_direct']:.2f}x)"),
        ("  invoke p90 ms", f"{i['api_presigned']['p90_ms']:.3f}",
         f"{i['direct']['p90_ms']:.3f}", "", ""),
        ("  invoke p99 ms", f"{i['api_presigned']['p99_ms']:.3f}",
         f"{i['direct']['p99_ms']:.3f}", "", ""),
        ("  boto3 invoke_endpoint p50/p90/p99 ms",
         f"{i['boto3']['p50_ms']:.2f}/{i['boto3']['p90_ms']:.2f}/{i['boto3']['p99_ms']:.2f}",
         "", "(reported)", ""),
        (f"transform {t['lines']:,} lines, median s", f"{t['shipyard_s']['median']:.3f}",
         f"{t['floor_s']['median']:.3f} (floor; "
         f"{t['floor_with_rm_s']['median']:.3f} with rm -f)",
         f"<= {TARGET_TRANSFORM_S}", verdict(t["pass"])),
    ]
    widths = [max(len(r[c]) for r in [*rows, ("metric", "Shipyard", "floor", "target",
                                              "verdict")]) for c in range(5)]
    header = ("metric", "Shipyard", "competitor/floor", "target", "PASS/FAIL")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print("\nSDK local mode (issue 4, not measured here): deploy 35 s, invoke p50 50 ms "
          "(direct 2.2 ms), transform 7.2 s")
    for title, part in (("deploy", d), ("transform", t)):
        print(f"\n{title}: Shipyard breakdown (s)   median      p90")
        for key, stats in part["shipyard_breakdown_s"].items():
            print(f"  {key:<28}{stats['median']:>9.4f}{stats['p90']:>9.4f}")
        print(f"{title}: floor breakdown (s)")
        for key, stats in part["floor_breakdown_s"].items():
            print(f"  {key:<28}{stats['median']:>9.4f}{stats['p90']:>9.4f}")
    if "direct_bridge_ip" in i:
        b = i["direct_bridge_ip"]
        print(f"\ninvoke, direct to the container's bridge address (no docker-proxy): p50 "
              f"{b['p50_ms']:.3f} / p90 {b['p90_ms']:.3f} / p99 {b['p99_ms']:.3f} ms")
    print("\ninvoke: CPU per request (us)      server   client")
    for label in [k for k in ("direct", "direct_bridge_ip", "api_presigned", "boto3") if k in i]:
        print(f"  {label:<30}{i[label]['server_cpu_us_per_req']:>8.1f}"
              f"{i[label]['client_cpu_us_per_req']:>9.1f}")
    r = result["restart"]
    print(f"\nrestart under load ({r['clients']} boto3 clients, retries off): "
          f"{r['requests']} requests, {r['failed']} failed, slowest answer "
          f"{r['slowest_answer_s']:.3f} s; control plane away (s): "
          + ", ".join(f"{k} {v:.2f}" for k, v in r["control_plane_away_s"].items()))
    print()
    for label, ok in (("deploy", d["pass"]), ("invoke", i["pass"]), ("transform", t["pass"]),
                      ("restart", r["pass"])):
        print(f"{verdict(ok)}: {label}")


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="measured deploy runs of each (7)")
    parser.add_argument("--transform-runs", type=int, default=5,
                        help="measured transform runs of each (5)")
    parser.add_argument("--warmups", type=int, default=1, help="unmeasured runs first (1)")
    parser.add_argument("--requests", type=int, default=2000,
                        help="sequential invocations of each kind (2000)")
    parser.add_argument("--rounds", type=int, default=20,
                        help="blocks the invocations are split in, order rotated (20): "
                        "short blocks spread the shared machine's drift over every kind alike")
    parser.add_argument("--poll", type=float, default=0.01,
                        help="seconds between polls while waiting, floor and Shipyard (0.01)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"result file ({RESULTS})")
    parser.add_argument("--serve-with-marks", nargs=2, metavar=("DATA_DIR", "MARKS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_with_marks:
        return serve_with_marks(*args.serve_with_marks)
    if min(args.runs, args.transform_runs, args.requests, args.rounds) < 1 or args.warmups < 0:
        parser.error("counts must be >= 1 and --warmups >= 0")

    sys.path.insert(0, str(ROOT / "src"))
    load_start = os.getloadavg()[0]
    client = ensure_engine()
    image = build_image(client)
    api = client.api
    scratch = Path(tempfile.mkdtemp(prefix="shipyard-bench-endpoints-"))
    try:
        tarball, model_dir = write_model(scratch)
        in_dir, inputs = transform_input(scratch)
        with shipyard_server(scratch / "shipyard", scratch / "server.log") as server:
            sm, smr = clients(server)
            sm.list_endpoints()  # load botocore's models before anything is timed
            offset = 0

            # 1. deploy -> first invoke, floor and Shipyard interleaved.
            floor: list[dict[str, float]] = []
            ship: list[dict[str, float]] = []
            for n in range(args.warmups + args.runs):
                order = ("floor", "ship") if n % 2 == 0 else ("ship", "floor")
                for which in order:
                    if which == "floor":
                        f = floor_deploy(api, image, model_dir, args.poll)
                    else:
                        s, offset = shipyard_deploy(server, sm, smr, image, tarball,
                                                    args.poll, offset)
                if n >= args.warmups:
                    floor.append(f)
                    ship.append(s)
                tag = "warm-up" if n < args.warmups else f"run {n - args.warmups + 1}"
                print(f"deploy {tag}: floor {f['wall_s']:.3f} s, Shipyard {s['wall_s']:.3f} s",
                      flush=True)
            deploy = deploy_report(floor, ship, args.warmups)

            # 2. invoke latency.
            invoke = invoke_latency(server, sm, smr, api, image, tarball, args.requests,
                                    args.rounds, args.poll)
            print(f"invoke p50: direct {invoke['direct']['p50_ms']:.3f} ms, API pre-signed "
                  f"{invoke['api_presigned']['p50_ms']:.3f} ms, boto3 "
                  f"{invoke['boto3']['p50_ms']:.3f} ms", flush=True)
            _, offset = server.new_marks(offset)

            # 3. transform, floor and Shipyard interleaved.
            model = f"bench-tj-model-{uuid.uuid4().hex[:8]}"
            sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={
                "Image": image, "ModelDataUrl": tarball.as_uri()})
            data = in_dir / "rows.csv"
            tfloor: list[dict[str, float]] = []
            tship: list[dict[str, float]] = []
            for n in range(args.warmups + args.transform_runs):
                order = ("floor", "ship") if n % 2 == 0 else ("ship", "floor")
                for which in order:
                    if which == "floor":
                        f = floor_transform(api, image, model_dir, data,
                                            scratch / "floor-out" / "rows.csv.out", inputs,
                                            args.poll)
                    else:
                        s, offset = shipyard_transform(server, sm, model, in_dir,
                                                       scratch / "out", inputs, args.poll,
                                                       offset)
                if n >= args.warmups:
                    tfloor.append(f)
                    tship.append(s)
                tag = "warm-up" if n < args.warmups else f"run {n - args.warmups + 1}"
                print(f"transform {tag}: floor {f['wall_s']:.3f} s, Shipyard "
                      f"{s['wall_s']:.3f} s", flush=True)
            transform = transform_report(tfloor, tship, args.warmups)
            sm.delete_model(ModelName=model)

            # 4. invocations while the server restarts.
            restart = restart_under_load(server, sm, image, tarball)
            sm, smr = clients(server)
            print(f"restart under load: {restart['requests']} requests, {restart['failed']} "
                  f"failed, slowest answer {restart['slowest_answer_s']:.3f} s", flush=True)

        result = {
            "benchmark": "endpoints",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(load_start),
            "command": " ".join([".venv/bin/python benchmarks/endpoints.py", *sys.argv[1:]]),
            "image": image, "poll_s": args.poll,
            "deploy": deploy, "invoke": invoke, "transform": transform, "restart": restart,
            "sdk_local_mode": SDK_LOCAL,
            "pass": deploy["pass"] and invoke["pass"] and transform["pass"] and restart["pass"],
        }
        print_table(result)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
        return 0
    finally:
        remove_scoped_containers(client)
        shutil.rmtree(scratch, ignore_errors=True)
        client.close()


if __name__ == "__main__":
    sys.exit(main())
