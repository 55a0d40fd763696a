"""Multi-node overhead: the same jobs and endpoint on a four-worker Docker Swarm and on one
engine, in the same run.

- Training jobs whose N hosts (N = 1, 2, 4) all-reduce a number over sockets:
  CreateTrainingJob -> Completed through the control plane, on one engine (the hosts on one
  bridge network) and on the swarm (one host per node, an overlay network).
- An endpoint of three instances: CreateEndpoint -> InService, on one engine and spread
  over three nodes.
- The same on the swarm with nothing shared (``staged``): the nodes stage their own inputs
  from the server's own S3 store and the platform's folders travel through it
  (``swarm_depot``, runtimes/shipping.py); the other two read a local folder.

The swarm is the test fixture (``scripts/swarm-fixture.sh``: the main engine as a drained
manager, four ``dockerd`` workers in network namespaces), made here and torn down at the
end; images are loaded onto the nodes before timing (the first start of an image on a node
pays for its load once, as a pull would). Needs root, and an engine not already in a swarm.

Run from the repository root::

    .venv/bin/python benchmarks/cluster.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_docker
from bench_docker import BASE_IMAGE, LABELS, ROOT

RESULTS = ROOT / "benchmarks" / "results" / "cluster.json"
FIXTURE = Path("/tmp/shipyard-swarm-bench")
WORKERS = 4

ALL_REDUCE = b'''import json, socket, time
cfg = json.load(open("/opt/ml/input/config/resourceconfig.json"))
me, hosts = cfg["current_host"], cfg["hosts"]
value = int(me.split("-")[1])
def connect(host):
    for _ in range(600):
        try:
            conn = socket.create_connection((host, 7777), timeout=2)
            conn.settimeout(120)
            return conn
        except OSError:
            time.sleep(0.05)
    raise SystemExit("cannot reach " + host)
if len(hosts) == 1:
    total = value
elif me == "algo-1":
    server = socket.create_server(("0.0.0.0", 7777))
    peers, total = [], value
    while len(peers) < len(hosts) - 1:
        conn, _ = server.accept()
        total += int(conn.recv(64).decode())
        peers.append(conn)
    for conn in peers:
        conn.sendall(str(total).encode())
else:
    conn = connect("algo-1")
    conn.sendall(str(value).encode())
    total = int(conn.recv(64).decode())
open("/opt/ml/model/sum", "w").write(str(total))
'''

SERVE = b'''#!/usr/bin/env python3
import os, signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def answer(self, body):
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def do_GET(self): self.answer(b"")
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0))); self.answer(b"{}")
ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
'''


def images(client: Any) -> tuple[str, str]:
    train = bench_docker.build_context(client, "shipyard-bench/all-reduce", {
        "Dockerfile": (f"FROM {BASE_IMAGE}\nCOPY a.py /opt/program/a.py\n"
                       'ENTRYPOINT ["python3", "/opt/program/a.py"]\n').encode(),
        "a.py": ALL_REDUCE})
    serve = bench_docker.build_context(client, "shipyard-bench/tiny-serve", {
        "Dockerfile": (f"FROM {BASE_IMAGE}\nCOPY serve /usr/local/bin/serve\n"
                       "RUN chmod 755 /usr/local/bin/serve\n").encode(),
        "serve": SERVE})
    return train, serve


def fixture(*args: str) -> str:
    env = {**os.environ, "SHIPYARD_SWARM_FIXTURE_DIR": str(FIXTURE)}
    return subprocess.run(["bash", str(ROOT / "scripts" / "swarm-fixture.sh"), *args],
                          check=True, env=env, capture_output=True, text=True).stdout


STORE_KEY = ("SYBENCHCLUSTERKEY001", "bench-cluster-secret-key-000000000000000")


def start_store(scratch: Path) -> Any:
    """The store of the ``staged`` kind: where every node reaches it (the fixture's bridge)."""
    sys.path.insert(0, str(ROOT / "src"))
    from shipyard.api.s3store import SeaweedStore

    store = SeaweedStore(scratch / "s3", port=0, keys=lambda: [STORE_KEY],
                         host=fixture("address").strip())
    store.start()
    import boto3

    s3 = boto3.session.Session(aws_access_key_id=STORE_KEY[0],
                               aws_secret_access_key=STORE_KEY[1],
                               region_name="us-east-1").client("s3", endpoint_url=store.url)
    s3.create_bucket(Bucket="bench")
    s3.put_object(Bucket="bench", Key="data/x.csv", Body=b"1\n")
    return store


def plane_for(kind: str, scratch: Path, client: Any, store: Any = None) -> Any:
    sys.path.insert(0, str(ROOT / "src"))
    from shipyard.control import ControlPlane
    from shipyard.control.context import runtime_for
    from shipyard.runtimes import DockerRuntime
    from shipyard.runtimes.swarm import SwarmRuntime
    from shipyard.settings import Settings

    values: dict[str, Any] = {"data_dir": str(scratch / kind / "state"),
                              "stop_grace_seconds": 3, "capacity_queue": False}
    if kind == "staged":
        values.update(runtime="swarm", s3_endpoint_url=store.url,
                      s3_access_key_id=STORE_KEY[0], s3_secret_access_key=STORE_KEY[1],
                      swarm_depot="s3://bench-depot/", scope=LABELS["org.shipyard.scope"],
                      swarm_node_engines=",".join(
                          f"shipyard-swn{i}=unix://{FIXTURE}/n{i}/docker.sock"
                          for i in range(1, WORKERS + 1)))
    settings = Settings.load(values, environ={})
    runtime: Any
    if kind == "staged":
        runtime = runtime_for(settings)
    elif kind == "swarm":
        runtime = SwarmRuntime(labels=LABELS, shared_paths=(scratch,), stop_grace_seconds=3,
                               node_engines={f"shipyard-swn{i}":
                                             f"unix://{FIXTURE}/n{i}/docker.sock"
                                             for i in range(1, WORKERS + 1)})
    else:
        runtime = DockerRuntime(client, labels=LABELS)
    return ControlPlane(settings, runtime)


def train_once(plane: Any, image: str, hosts: int, scratch: Path, name: str) -> float:
    data = scratch / "data"
    data.mkdir(exist_ok=True)
    (data / "x.csv").write_text("1\n")
    staged = plane.ctx.runtime.stages_on_nodes
    source, output = ("s3://bench/data/", "s3://bench/out") if staged else (
        data.as_uri(), (scratch / "out").as_uri())
    began = time.perf_counter()
    plane.create("training", {
        "TrainingJobName": name, "RoleArn": "arn:aws:iam::000000000000:role/bench",
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "InputDataConfig": [{"ChannelName": "training", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": source}}}],
        "OutputDataConfig": {"S3OutputPath": output},
        "ResourceConfig": {"InstanceType": "local", "InstanceCount": hosts,
                           "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600}})
    record = plane.wait("training", name, timeout=600, poll=0.02)
    took = time.perf_counter() - began
    if record["TrainingJobStatus"] != "Completed":
        raise SystemExit(f"{name}: {record.get('FailureReason')}")
    return took


def endpoint_once(plane: Any, image: str, name: str, count: int = 3,
                  instance_type: str = "local") -> float:
    """CreateEndpoint -> InService of ``count`` instances, in seconds; then deleted."""
    plane.create("model", {"ModelName": name, "ExecutionRoleArn":
                           "arn:aws:iam::000000000000:role/bench",
                           "PrimaryContainer": {"Image": image}})
    plane.create("endpoint-config", {"EndpointConfigName": name, "ProductionVariants": [{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": count,
        "InstanceType": instance_type}]})
    began = time.perf_counter()
    plane.create("endpoint", {"EndpointName": name, "EndpointConfigName": name})
    record = plane.wait_endpoint(name, timeout=600)
    took = time.perf_counter() - began
    if record["EndpointStatus"] != "InService":
        raise SystemExit(f"{name}: {record.get('FailureReason')}")
    plane.delete("endpoint", name)
    deadline = time.monotonic() + 60
    while plane.ctx.store.list_jobs("endpoint") and time.monotonic() < deadline:
        time.sleep(0.1)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    client = bench_docker.ensure_engine()
    train, serve = images(client)
    scratch = Path(tempfile.mkdtemp(prefix="shipyard-bench-cluster-"))
    fixture("up", str(WORKERS))
    results: dict[str, dict[str, float]] = {}
    store = None
    try:
        store = start_store(scratch)
        planes = {kind: plane_for(kind, scratch, client, store)
                  for kind in ("engine", "swarm", "staged")}
        try:
            # Warm: the images on every node, each plane's first job.
            for kind, plane in planes.items():
                train_once(plane, train, 1 if kind == "engine" else 4, scratch,
                           f"warm-{kind}")
            for hosts in (1, 2, 4):
                for kind, plane in planes.items():
                    times = [train_once(plane, train, hosts, scratch, f"t{hosts}-{kind}-{i}")
                             for i in range(args.runs)]
                    results.setdefault(f"training N={hosts}", {})[kind] = statistics.median(
                        times)
            for kind, plane in planes.items():
                times = [endpoint_once(plane, serve, f"ep-{kind}-{i}") for i in range(args.runs)]
                results.setdefault("endpoint 3 instances", {})[kind] = statistics.median(times)
        finally:
            for plane in planes.values():
                plane.close()
    finally:
        if store is not None:
            store.stop()
        fixture("down")
        shutil.rmtree(scratch, ignore_errors=True)
        bench_docker.remove_scoped_containers(client)
    print(f"{'median seconds, create -> done':<34} {'one engine':>11} {'swarm':>9} "
          f"{'staged':>9}")
    for what, row in results.items():
        print(f"{what:<34} {row['engine']:>11.2f} {row['swarm']:>9.2f} {row['staged']:>9.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"runs": args.runs, "results": results}, indent=2))


if __name__ == "__main__":
    main()
