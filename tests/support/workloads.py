"""Workloads the tests run: small training, processing and serving programs, their images,
and a project folder the process runtime runs as an image."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from tests.support.files import tar_files
from tests.support.images import build_image

SEED_000_TRAIN = '''from pathlib import Path
import json

input_dir = Path("/opt/ml/input/data/training")
model_dir = Path("/opt/ml/model")
model_dir.mkdir(parents=True, exist_ok=True)

rows = sum(1 for _ in input_dir.glob("**/*") if _.is_file())
(model_dir / "model.json").write_text(json.dumps({"training_files": rows}))
'''

# Seed 002's shape (hard-coded /opt/ml paths, hyperparameters.json read directly, a train and
# a validation channel), with numpy standing in for JAX.
SEED_002_STYLE_TRAIN = '''import json, os
import numpy as np

def read_hyperparameters():
    with open("/opt/ml/input/config/hyperparameters.json") as f:
        return json.load(f)

def load(folder):
    rows = [np.loadtxt(os.path.join(folder, n), delimiter=",", ndmin=2)
            for n in sorted(os.listdir(folder))]
    data = np.vstack(rows)
    return data[:, :-1], data[:, -1]

def main():
    hp = read_hyperparameters()
    train_data_dir = "/opt/ml/input/data/train"
    val_data_dir = "/opt/ml/input/data/val"
    model_dir = "/opt/ml/model"
    x, y = load(train_data_dir)
    xv, yv = load(val_data_dir)
    w = np.zeros(x.shape[1])
    lr = float(hp["learning-rate"])
    for epoch in range(int(hp["epochs"])):
        grad = x.T @ (x @ w - y) / len(y)
        w -= lr * grad
        print(f"epoch={epoch} train_loss={float(np.mean((x @ w - y) ** 2)):.6f}", flush=True)
    val_loss = float(np.mean((xv @ w - yv) ** 2))
    print(f"val_loss={val_loss:.6f}", flush=True)
    np.save(os.path.join(model_dir, "final.npy"), w)
    with open(os.path.join(model_dir, "meta.json"), "w") as f:
        json.dump({"val_loss": val_loss, "hosts": os.environ.get("SM_HOSTS")}, f)

if __name__ == "__main__":
    main()
'''

#: Each host sends its number to algo-1, which adds them up and sends the sum back to all:
#: an all-reduce over plain sockets, between hosts on distinct nodes.
ALL_REDUCE = '''import json, os, socket, time
cfg = json.load(open("/opt/ml/input/config/resourceconfig.json"))
me, hosts = cfg["current_host"], cfg["hosts"]
value = int(me.split("-")[1]) ** 2
def connect(host):
    for _ in range(300):
        try:
            conn = socket.create_connection((host, 7777), timeout=2)
            conn.settimeout(120)  # the sum comes once every host has started
            return conn
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{me}: cannot reach {host}")
if me == "algo-1":
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
print(f"{me}: sum={total}", flush=True)
json.dump({"me": me, "sum": total}, open("/opt/ml/model/result.json", "w"))
'''

# Exec-form scripts for the contract's edge cases; argv[1] selects the behaviour.
BEHAVIOURS = '''import json, os, signal, socket, sys, time
mode = os.environ.get("MODE", "ok")
print("mode", mode, "argv", sys.argv[1:], flush=True)
if mode == "failure-file":
    with open("/opt/ml/output/failure", "w") as f:
        f.write("ValueError: bad column 'price'\\n" + "x" * 2000)
    sys.exit(2)
if mode == "exit-3":
    print("about to fail", file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "oom":
    hog = [b"x" * (256 * 1024 * 1024) for _ in range(40)]
if mode == "checkpoint-on-sigterm":
    def on_term(signum, frame):
        with open("/opt/ml/model/checkpoint.json", "w") as f:
            json.dump({"saved_on": "SIGTERM"}, f)
        print("checkpoint saved", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
if mode == "ignore-sigterm":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
if mode == "sleep":
    time.sleep(float(os.environ.get("SLEEP", "30")))
if mode == "metrics":
    for i in range(4):
        print(f"epoch {i}: loss={1.0 / (i + 1):.3f} accuracy={0.5 + i / 10:.2f}", flush=True)
if mode == "peers":
    cfg = json.load(open("/opt/ml/input/config/resourceconfig.json"))
    me, hosts = cfg["current_host"], cfg["hosts"]
    # SageMaker's advice: peers' names may take a moment to resolve, so retry.
    addresses = {}
    for h in hosts:
        for _ in range(100):
            try:
                addresses[h] = socket.gethostbyname(h)
                break
            except OSError:
                time.sleep(0.05)
    if me == "algo-1":
        server = socket.create_server(("0.0.0.0", 7777))
        conn, _ = server.accept()
        message = conn.recv(100).decode()
    else:
        for _ in range(100):
            try:
                conn = socket.create_connection(("algo-1", 7777), timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        conn.sendall(("hello from " + me).encode())
        message = "sent"
    json.dump({"me": me, "addresses": addresses, "message": message},
              open(f"/opt/ml/model/{me}.json", "w"))
if mode == "network":
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=1)
        print("network: yes", flush=True)
    except OSError as exc:
        print("network: no", type(exc).__name__, flush=True)
    print("interfaces", sorted(os.listdir("/sys/class/net")), flush=True)
    cfg = json.load(open("/opt/ml/input/config/resourceconfig.json"))
    for peer in cfg["hosts"]:
        for _ in range(100):
            try:
                print("resolves", peer, bool(socket.gethostbyname(peer)), flush=True)
                break
            except OSError:
                time.sleep(0.05)
    if len(cfg["hosts"]) > 1:
        time.sleep(2)  # stay resolvable while the peers look this host up
open("/opt/ml/model/done", "w").write(mode)
'''

PROCESSING = '''import os, pathlib, sys
inp = pathlib.Path("/opt/ml/processing/input")
out = pathlib.Path("/opt/ml/processing/output/report")
lines = []
for name in ("first", "second"):
    for f in sorted((inp / name).rglob("*")):
        if f.is_file():
            lines.append(f"{name}/{f.relative_to(inp / name)}: {f.read_text().strip()}")
(out / "summary.txt").write_text("\\n".join(lines) + "\\n")
(out / "nested").mkdir(exist_ok=True)
(out / "nested" / "count.txt").write_text(str(len(lines)))
pathlib.Path("/opt/ml/output/message").write_text(f"processed {len(lines)} files")
print("args", sys.argv[1:], "env", os.environ.get("PROCESSING_JOB_NAME"), flush=True)
'''


# An image that implements the serving contract its own way: a stdlib http.server program
# named `serve`, no toolkit. MODE (env) and the request body pick a behaviour.
PLAIN_SERVE = r'''#!/usr/bin/env python3
import json, os, signal, socket, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = os.environ.get("MODE", "ok")
# As PID 1 the default SIGTERM action does nothing: exit as SageMaker expects.
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
if MODE == "exit":
    print("serve: cannot start, MODE=exit", flush=True)
    sys.exit(2)
if MODE == "child":
    # The server runs in a child process that can die while the container lives on: its port
    # then refuses connections and the engine still says "running".
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        while True:
            time.sleep(3600)
    with open("/tmp/serve.pid", "w") as f:
        f.write(str(os.getpid()))
try:
    MODEL = open("/opt/ml/model/model.txt").read().strip()
except OSError:
    MODEL = ""
print(f"serve: model {MODEL!r} on {socket.gethostname()}", flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response (head + body), or Nagle and delayed ACKs add 40 ms per request.
    wbufsize = 1 << 16

    def log_message(self, *args):
        pass

    def answer(self, status, body, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/ping":
            self.answer(503 if MODE == "never-ready" else 200, b"")
        else:
            self.answer(404, b"{}")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if body == b"crash":
            os._exit(3)
        if body == b"hang":
            time.sleep(3600)
        if body.startswith(b"close"):
            # Read, then hang up without an answer: the request reached the model.
            print(f"serve: took {body.decode()!r} and hung up", flush=True)
            self.close_connection = True
            return
        if body == b"fail":
            return self.answer(400, b"bad input: fail", "text/plain")
        if body.startswith(b"big:"):
            return self.answer(200, b"x" * int(body[4:]), "application/octet-stream")
        reply = {"model": MODEL, "host": socket.gethostname(), "body": body.decode("latin-1"),
                 "content_type": self.headers.get("Content-Type"),
                 "accept": self.headers.get("Accept"),
                 "attributes": self.headers.get("X-Amzn-SageMaker-Custom-Attributes"),
                 "target_model": self.headers.get("X-Amzn-SageMaker-Target-Model"),
                 "variant": os.environ.get("VARIANT_TAG", "")}
        self.answer(200, json.dumps(reply).encode(), "application/json",
                    [("X-Amzn-SageMaker-Custom-Attributes", "seen=1")])


port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
'''


# An inference server in the contract's shape, written its own way (stdlib only), run by the
# process runtime from a ``serve_project`` folder. The body picks the behaviour: ``fail`` ->
# 400, ``stream:N`` -> N chunks, ``stream:N:break`` -> N chunks then the connection drops
# mid-body, ``sleep:S`` -> echoed after S seconds; anything else is echoed with the headers
# seen.
ECHO_SERVE = r'''#!/usr/bin/env python3
import hashlib, json, os, socket, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, ctype, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(200 if self.path == "/ping" else 404, b"", "text/plain")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if body == b"fail":
            return self.answer(400, b"bad input: fail", "text/plain")
        if body.startswith(b"sleep:"):
            time.sleep(float(body[6:]))
        if body.startswith(b"stream:"):
            parts = body.decode().split(":")
            self.send_response(200)
            self.send_header("Content-Type", "text/x-tokens")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(parts[1])):
                chunk = f"token {i};".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                time.sleep(0.01)
            if parts[2:] == ["break"]:
                self.wfile.write(b"ff\r\nhalf a ch")
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(b"0\r\n\r\n")
            return
        seen = {name: self.headers.get(name) for name in (
            "Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes",
            "X-Amzn-SageMaker-Target-Model", "X-Amzn-SageMaker-Inference-Id")}
        # Big bodies come back as their size and digest: replies have a size limit too.
        reply = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest(), "headers": seen}
        if len(body) <= 4096:
            reply["body"] = body.decode("latin-1")
        self.answer(200, json.dumps(reply).encode(), "application/x-echo",
                    [("X-Amzn-SageMaker-Custom-Attributes", "seen=1")])


port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
print(f"serve: listening on {port}", flush=True)
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


def serve_project(folder: Path) -> Path:
    """A process-runtime "image": a folder whose executable ``serve`` is the server."""
    folder.mkdir(parents=True, exist_ok=True)
    serve = folder / "serve"
    serve.write_text(ECHO_SERVE)
    serve.chmod(0o755)
    return folder


def build_all(docker_client: Any) -> dict[str, str]:
    """Every workload image the tests use, built once per engine (tagged by content)."""
    return {
        "seed000": build_image(
            docker_client, "seed000", {"train.py": SEED_000_TRAIN},
            "RUN ln -sf /usr/bin/python3 /usr/local/bin/python\nENV PYTHONUNBUFFERED=1\n"
            "WORKDIR /opt/program\nCOPY train.py ./\nENTRYPOINT [\"python\", \"train.py\"]",
            with_toolkit=False),
        "seed002": build_image(
            docker_client, "seed002", {"train.py": SEED_002_STYLE_TRAIN},
            "ENV PYTHONUNBUFFERED=1 SAGEMAKER_PROGRAM=train.py "
            "SAGEMAKER_SUBMIT_DIRECTORY=/opt/program\nCOPY train.py /opt/program/\n"
            "ENTRYPOINT [\"train\"]", wheels=("numpy",)),
        "behaviours": build_image(
            docker_client, "behaviours", {"b.py": BEHAVIOURS},
            "COPY b.py /opt/program/\nENTRYPOINT [\"python3\", \"/opt/program/b.py\"]",
            with_toolkit=False),
        "toolkit-behaviours": build_image(
            docker_client, "toolkit-behaviours", {"b.py": BEHAVIOURS},
            "ENV SAGEMAKER_PROGRAM=b.py SAGEMAKER_SUBMIT_DIRECTORY=/opt/program\n"
            "COPY b.py /opt/program/"),
        "toolkit": build_image(docker_client, "toolkit", {}, "ENV PYTHONUNBUFFERED=1"),
        "plain-serve": build_image(
            docker_client, "plain-serve", {"serve": PLAIN_SERVE},
            "COPY serve /usr/local/bin/serve\nRUN chmod 755 /usr/local/bin/serve\n"
            "ENV PYTHONUNBUFFERED=1", with_toolkit=False),
        "processing": build_image(
            docker_client, "processing", {"p.py": PROCESSING},
            "COPY p.py /opt/program/", with_toolkit=False),
    }


#: Reports what each host found where SageMaker puts it, and writes a model file of its own,
#: one all hosts write (algo-1's is kept) and output data; with hyperparameter fail, fails.
STAGED = '''import json, pathlib, sys
config = pathlib.Path("/opt/ml/input/config")
me = json.load(open(config / "resourceconfig.json"))["current_host"]
hp = json.load(open(config / "hyperparameters.json"))
data = pathlib.Path("/opt/ml/input/data")
seen = {c.name: sorted(str(p.relative_to(c)) for p in c.rglob("*") if p.is_file())
        for c in sorted(data.iterdir())}
print(me, json.dumps(seen), flush=True)
if hp.get("fail"):
    pathlib.Path("/opt/ml/output/failure").write_text(f"{me} was told to fail")
    sys.exit(3)
model = pathlib.Path("/opt/ml/model")
(model / f"{me}.json").write_text(json.dumps({"seen": seen, "hp": hp}))
(model / "who.txt").write_text(me)
deep = pathlib.Path("/opt/ml/output/data/deep")
deep.mkdir(parents=True, exist_ok=True)
(deep / f"{me}.txt").write_text((data / "all" / "a.txt").read_text())
'''


def staged_request(name: str, image: str, **hyperparameters: str) -> dict[str, Any]:
    """A two-host training job of :data:`STAGED` over ``s3://data/``: channel ``all``
    (everything under ``all/``) and ``shard`` (``shards/`` split by key)."""
    return {
        "TrainingJobName": name, "RoleArn": "arn:aws:iam::000000000000:role/shipyard",
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "HyperParameters": {"lr": "0.5", **hyperparameters},
        "InputDataConfig": [
            {"ChannelName": "all", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": "s3://data/all/"}}},
            {"ChannelName": "shard", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": "s3://data/shards/",
                "S3DataDistributionType": "ShardedByS3Key"}}}],
        "OutputDataConfig": {"S3OutputPath": "s3://data/out"},
        "ResourceConfig": {"InstanceType": "local", "InstanceCount": 2, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600}}


def run_staged_jobs(plane: Any, boto: Any, image: str) -> None:
    """Run :func:`staged_request` jobs of ``image`` (:data:`STAGED`) on ``plane`` over data
    put in ``boto``'s store, and check what each host saw and what came back: the model
    (algo-1's copy of the file both wrote), output data, a failure file."""
    boto.create_bucket(Bucket="data")
    for key, body in {"all/a.txt": "A", "all/sub/b.txt": "B", "shards/s-0": "0",
                      "shards/s-1": "1"}.items():
        boto.put_object(Bucket="data", Key=key, Body=body.encode())

    plane.create("training", staged_request("staged", image))
    record = plane.wait("training", "staged", timeout=240)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    with tempfile.TemporaryDirectory() as scratch:
        model = Path(scratch) / "model.tar.gz"
        boto.download_file("data", "out/staged/output/model.tar.gz", str(model))
        files = tar_files(model)
        output = Path(scratch) / "output.tar.gz"
        boto.download_file("data", "out/staged/output/output.tar.gz", str(output))
        outputs = tar_files(output)
    assert files["who.txt"] == b"algo-1"  # the file every host wrote: algo-1's copy
    reports = {h: json.loads(files[f"{h}.json"]) for h in ("algo-1", "algo-2")}
    for report in reports.values():
        assert report["seen"]["all"] == ["a.txt", "sub/b.txt"]
        assert report["hp"] == {"lr": "0.5"}
    assert [reports[h]["seen"]["shard"] for h in ("algo-1", "algo-2")] == [["s-0"], ["s-1"]]
    assert {k: v for k, v in outputs.items() if k.startswith("deep/")} == {
        "deep/algo-1.txt": b"A", "deep/algo-2.txt": b"A"}

    # A failure the container writes comes back with the rest of its output.
    plane.create("training", staged_request("told-to-fail", image, fail="yes"))
    failed = plane.wait("training", "told-to-fail", timeout=240)
    assert failed["TrainingJobStatus"] == "Failed"
    assert "was told to fail" in failed["FailureReason"], failed["FailureReason"]
