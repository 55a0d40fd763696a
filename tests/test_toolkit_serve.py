"""``serve`` as a real process on 127.0.0.1:0, driven over real HTTP (no mocks).

Each test writes a model dir with ``code/inference.py``, starts ``python -m
shipyard.toolkit.serve``, reads the bound port from its log and polls ``/ping``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.serve import Server

FULL = '''
import json, os, time

def model_fn(model_dir, context):
    while os.path.exists(os.path.join(model_dir, "hold")):
        time.sleep(0.02)
    return {"scale": 2, "model_dir": context.system_properties["model_dir"], "loader": os.getpid()}

def model_warmup_fn(model_dir, model):
    model["warm"] = True

def input_fn(data, content_type, context):
    if content_type != "application/json":
        raise ValueError("only JSON here")
    return json.loads(data)

class Teapot(Exception):
    status_code = 418

def predict_fn(data, model, context):
    if not model.get("warm"):
        raise RuntimeError("not warmed")
    if "started" in data:
        open(data["started"], "w").close()
    try:
        time.sleep(data.get("sleep", 0))
    except Exception:
        return {"swallowed": True}  # a broad except must not hide the timeout
    if data.get("stuck"):
        import signal
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # as if stuck in C code
        time.sleep(60)
    if data.get("boom"):
        raise RuntimeError("boom: secret internals")
    if data.get("teapot"):
        raise Teapot("short and stout")
    if data.get("stream"):
        def chunks():
            yield b"first\\n"
            deadline = time.time() + 10
            while not os.path.exists(data["stream"]) and time.time() < deadline:
                time.sleep(0.01)
            yield b"second\\n"
        return chunks()
    return {
        "sum": model["scale"] * sum(data.get("values", [])),
        "pid": os.getpid(),
        "loader": model["loader"],
        "custom": context.custom_attributes,
        "inference_id": context.inference_id,
        "target": context.target_model,
        "props": context.request_processor[0].get_request_properties().get("x-amzn-sagemaker-custom-attributes"),
    }

def output_fn(prediction, accept, context):
    if hasattr(prediction, "__next__"):
        return prediction, "text/plain"
    return json.dumps(prediction), "application/json"
'''

TRANSFORM = '''
def model_fn(model_dir):
    return "M"

def transform_fn(model, data, content_type, accept):
    kind = type(data).__name__
    return f"{model}|{content_type}|{accept}|{kind}|{len(data)}", "text/plain"
'''

DEFAULTS = '''
def model_fn(model_dir):
    return lambda x: x.sum(axis=-1)
'''


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def _start(code: str | None, env: dict[str, str] | None = None, ready: bool = True,
               program: str = "inference.py") -> Server:
        root = tmp_path / f"opt-ml-{len(servers)}"
        (root / "model" / "code").mkdir(parents=True)
        if code is not None:
            (root / "model" / "code" / program).write_text(code)
        server = Server(root, env or {})
        servers.append(server)
        server.wait_listening()
        if ready:
            server.wait_ping(200)
        return server

    yield _start
    for server in servers:
        server.stop()


def test_routes_and_context_headers(start: Any) -> None:
    server = start(FULL)
    status, headers, body = server.request("GET", "/ping")
    assert (status, body) == (200, b"")
    status, headers, body = server.invoke(
        {"values": [1, 2, 3]},
        **{"X-Amzn-SageMaker-Custom-Attributes": "trace=1", "X-Amzn-SageMaker-Inference-Id": "abc",
           "X-Amzn-SageMaker-Target-Model": "m1.tar.gz"})
    assert status == 200 and headers["content-type"] == "application/json"
    out = json.loads(body)
    assert (out["sum"], out["custom"], out["inference_id"], out["target"], out["props"]) == (
        12, "trace=1", "abc", "m1.tar.gz", "trace=1")
    status, _, body = server.request("GET", "/execution-parameters")
    assert status == 200 and json.loads(body) == {
        "MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}
    assert server.request("GET", "/nope")[0] == 404
    assert server.request("GET", "/invocations")[0] == 405
    # charset parameter: the handler sees the bare media type
    status, _, body = server.invoke({"values": [1]}, **{"Content-Type": "application/json; charset=utf-8"})
    assert status == 200 and json.loads(body)["sum"] == 2


def test_handler_errors(start: Any) -> None:
    server = start(FULL)
    status, headers, body = server.invoke({"boom": True})
    assert status == 500 and headers["content-type"] == "application/json"
    err = json.loads(body)
    assert err["type"] == "RuntimeError" and "traceback" not in err
    assert b"Traceback" not in body
    assert server.invoke({"teapot": True})[0] == 418
    # input_fn refused the type: the user's ValueError is a 500
    assert server.request("POST", "/invocations", b"a,b", {"Content-Type": "text/csv"})[0] == 500
    time.sleep(0.1)
    assert "Traceback" in server.log() and "boom: secret internals" in server.log()


def test_debug_errors_include_traceback(start: Any) -> None:
    server = start(FULL, {"SHIPYARD_SERVE_DEBUG_ERRORS": "true"})
    status, _, body = server.invoke({"boom": True})
    assert status == 500 and "boom: secret internals" in json.loads(body)["traceback"]


def test_default_codecs_and_negotiation(start: Any) -> None:
    server = start(DEFAULTS)
    status, headers, body = server.request("POST", "/invocations", b"[[1, 2], [3, 4]]",
                                           {"Content-Type": "application/json"})
    assert (status, body, headers["content-type"]) == (200, b"[3, 7]", "application/json")
    status, headers, body = server.request("POST", "/invocations", b"1,2\n3,4\n",
                                           {"Content-Type": "text/csv", "Accept": "text/csv"})
    assert (status, body) == (200, b"3.0\n7.0\n")
    npy = np.lib.format
    import io
    buf = io.BytesIO()
    np.save(buf, np.ones((2, 3), dtype=np.float32))
    status, headers, body = server.request(
        "POST", "/invocations", buf.getvalue(),
        {"Content-Type": "application/x-npy", "Accept": "text/csv;q=0.5, application/x-npy"})
    assert status == 200 and headers["content-type"] == "application/x-npy"
    assert np.load(io.BytesIO(body)).tolist() == [3.0, 3.0]
    assert npy is not None
    assert server.request("POST", "/invocations", b"<x/>", {"Content-Type": "application/xml"})[0] == 415
    assert server.request("POST", "/invocations", b"[1]",
                          {"Content-Type": "application/json", "Accept": "application/xml"})[0] == 406
    assert server.request("POST", "/invocations", b"{oops", {"Content-Type": "application/json"})[0] == 400


def test_transform_fn_without_context_and_program_env(start: Any) -> None:
    server = start(TRANSFORM, {"SAGEMAKER_PROGRAM": "handler_x.py"}, program="handler_x.py")
    status, headers, body = server.request("POST", "/invocations", b"\x00\x01",
                                           {"Content-Type": "application/octet-stream"})
    assert (status, body) == (200, b"M|application/octet-stream|application/json|bytes|2")
    assert headers["content-type"] == "text/plain"
    status, _, body = server.request("POST", "/invocations", b"[1]",
                                     {"Content-Type": "application/json", "Accept": "*/*"})
    assert body == b"M|application/json|application/json|str|3"


def test_missing_model_fn_keeps_ping_503(start: Any) -> None:
    server = start(None, ready=False)
    deadline = time.monotonic() + 10
    while "model failed to load" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.request("GET", "/ping")[0] == 503
    status, _, body = server.invoke([1])
    assert status == 503 and b"model_fn" in body


def test_ping_before_load_and_after_worker_dies(start: Any, tmp_path: Path) -> None:
    root = tmp_path / "opt-ml-0"
    (root / "model").mkdir(parents=True)
    hold = root / "model" / "hold"
    hold.write_text("")
    server = start(FULL, {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}, ready=False)
    assert server.request("GET", "/ping")[0] == 503
    assert server.invoke({"values": [1]})[0] == 503
    hold.unlink()
    server.wait_ping(200)
    pids = server.worker_pids()
    assert len(pids) == 2
    hold.write_text("")  # the replacement worker will block in model_fn
    os.kill(pids[0], signal.SIGKILL)
    server.wait_ping(503, timeout=10)
    hold.unlink()
    server.wait_ping(200)
    assert len(server.worker_pids()) == 2 and pids[0] not in server.worker_pids()


def test_preload_loads_once_before_forking(start: Any) -> None:
    server = start(FULL, {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SHIPYARD_SERVE_PRELOAD": "true"})
    loaders = {json.loads(server.invoke({"values": [1]})[2])["loader"] for _ in range(20)}
    assert loaders == {server.proc.pid}
    assert len(server.worker_pids()) == 2


def test_payload_limit(start: Any) -> None:
    server = start(FULL, {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0.001"})  # 1048 bytes
    status, _, body = server.invoke({"values": [1] * 1000})
    assert status == 413 and b"SAGEMAKER_MAX_PAYLOAD_IN_MB" in body
    assert server.invoke({"values": [1] * 10})[0] == 200


def test_timeout_then_worker_still_serves(start: Any) -> None:
    server = start(FULL, {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "0.3"})
    began = time.monotonic()
    status, _, body = server.invoke({"sleep": 5})
    assert status == 504 and b"SAGEMAKER_MODEL_SERVER_TIMEOUT" in body
    assert time.monotonic() - began < 3
    assert server.invoke({"values": [2]})[0] == 200


@pytest.mark.parametrize(
    "raw",
    [b"NONSENSE\r\n\r\n", b"POST /invocations HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
     b"GET /ping HTTP/1.1\r\nno-colon-here\r\n\r\n"],
    ids=["request-line", "negative-length", "header-line"],
)
def test_malformed_requests_get_400(start: Any, raw: bytes) -> None:
    server = start(FULL)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while more := sock.recv(65536):
            data += more
    assert data.startswith(b"HTTP/1.1 400 ")


@pytest.mark.slow
def test_watchdog_kills_a_worker_stuck_past_the_timeout(start: Any) -> None:
    server = start(FULL, {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "0.3"})
    (pid,) = server.worker_pids()
    began = time.monotonic()
    with pytest.raises(http.client.RemoteDisconnected):
        server.invoke({"stuck": True})
    assert time.monotonic() - began < 15
    assert "stuck for" in server.log()
    server.wait_ping(200)
    assert server.worker_pids() != [pid]
    assert server.invoke({"values": [1]})[0] == 200


def test_sigterm_drains_in_flight_request(start: Any, tmp_path: Path) -> None:
    server = start(FULL)
    marker = tmp_path / "started"
    result: dict[str, Any] = {}

    def slow() -> None:
        result["resp"] = server.invoke({"sleep": 1.0, "started": str(marker), "values": [5]})

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists()
    server.proc.send_signal(signal.SIGTERM)
    thread.join(10)
    status, _, body = result["resp"]
    assert status == 200 and json.loads(body)["sum"] == 10
    assert server.proc.wait(10) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_streaming_response(start: Any, tmp_path: Path) -> None:
    server = start(FULL)
    release = tmp_path / "release"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/invocations", json.dumps({"stream": str(release)}),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
    # the first chunk arrives while the generator is still waiting for `release`
    assert resp.readline() == b"first\n"
    release.write_text("")
    assert resp.read() == b"second\n"
    conn.close()
    # the connection's worker is free again
    assert server.invoke({"values": [1]})[0] == 200


def test_keep_alive_pipelining_and_chunked_request(start: Any) -> None:
    server = start(FULL)
    body = b'{"values": [1, 2]}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}"):
            more = sock.recv(65536)
            assert more
            data += more
    assert b'"sum": 6' in data


def test_serve_argument_handling(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "shipyard.toolkit.serve", "serve", "extra"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2 and "no arguments" in proc.stderr


def test_requirements_installed_at_start(tmp_path: Path) -> None:
    code = tmp_path / "model" / "code"
    code.mkdir(parents=True)
    (code / "inference.py").write_text(DEFAULTS)
    (code / "requirements.txt").write_text("shipyard-no-such-package-zz\n")
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(tmp_path), "PIP_NO_INDEX": "1",
           "SAGEMAKER_BIND_TO_PORT": "0", "SHIPYARD_SERVE_HOST": "127.0.0.1"}
    proc = subprocess.run([sys.executable, "-m", "shipyard.toolkit.serve", "serve"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert "cannot start" in proc.stderr and "shipyard-no-such-package-zz" in proc.stderr
