"""Multi-model mode (``SAGEMAKER_MULTI_MODEL=true``): real ``serve`` processes, 2 workers, real HTTP.

Models are directories under ``<root>/models/<name>/model`` with a ``config.json`` saying how many
MiB of resident ballast their ``model_fn`` allocates, so the memory budget's arithmetic is known.
The last test runs the same in a real container with a cgroup memory limit.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.toolkit.serving.memory import _cgroup_limit, default_budget, memory_limit
from tests.support.containers import wait_for_ping
from tests.support.images import build_image
from tests.support.net import http_request
from tests.support.serve import Server

MIB = 1024 * 1024

# A model's own code; {kind} differs per model so a shared module would show.
MODEL_CODE = '''
import json, os

KIND = "{kind}"

def model_fn(model_dir, context):
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    if config.get("fail"):
        raise RuntimeError("cannot load this one")
    # bytes repetition writes every page: resident, unlike numpy.zeros
    return {{"ballast": b"\\x01" * (config.get("mb", 0) * 1024 * 1024),
             "name": context.system_properties["model_name"]}}

def input_fn(data, content_type):
    return json.loads(data)

def predict_fn(data, model, context):
    return {{"kind": KIND, "name": model["name"], "pid": os.getpid(),
             "sum": sum(data.get("values", [])), "target": context.target_model}}

def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
'''

# The image's handler (SAGEMAKER_PROGRAM in <root>/model/code): models without code use it,
# with the default codecs (numpy in this venv).
IMAGE_CODE = '''
import json, os

def model_fn(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        scale = json.load(f)["scale"]
    return lambda x: x.sum(axis=-1) * scale
'''


@pytest.fixture
def mme(tmp_path: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def _start(env: dict[str, str] | None = None) -> Server:
        root = tmp_path / f"opt-ml-{len(servers)}"
        (root / "model" / "code").mkdir(parents=True)
        (root / "model" / "code" / "inference.py").write_text(IMAGE_CODE)
        (root / "models").mkdir()
        server = Server(root, {"SAGEMAKER_MULTI_MODEL": "true",
                               "SAGEMAKER_MODEL_SERVER_WORKERS": "2", **(env or {})})
        servers.append(server)
        server.wait_listening()
        server.wait_ping(200)
        return server

    yield _start
    for server in servers:
        server.stop()


def _model(server: Server, name: str, *, mb: int = 0, code: bool = True, **config: Any) -> Path:
    model_dir = server.root / "models" / name / "model"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "config.json").write_text(json.dumps({"mb": mb, **config}))
    if code:
        (model_dir / "code" / "inference.py").write_text(MODEL_CODE.format(kind=f"kind-{name}"))
    return model_dir


def _call(server: Server, method: str, path: str, payload: Any = None,
          **headers: str) -> tuple[int, Any]:
    body = None if payload is None else json.dumps(payload).encode()
    status, _, raw = server.request(method, path, body,
                                    {"Content-Type": "application/json", **headers})
    return status, json.loads(raw) if raw else None


def _load(server: Server, name: str, url: Path | str) -> tuple[int, Any]:
    return _call(server, "POST", "/models", {"model_name": name, "url": str(url)})


def _names(server: Server) -> list[str]:
    status, body = _call(server, "GET", "/models")
    assert status == 200
    return [m["modelName"] for m in body["models"]]


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_ping_and_routes_without_models(mme: Any) -> None:
    server = mme()
    assert server.request("GET", "/ping")[:3:2] == (200, b"")
    status, body = _call(server, "GET", "/execution-parameters")
    assert (status, body) == (200, {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD",
                                    "MaxPayloadInMB": 6})
    assert _call(server, "GET", "/models") == (200, {"models": []})
    status, body = _call(server, "POST", "/invocations", {"values": [1]})
    assert status == 400 and "X-Amzn-SageMaker-Target-Model" in body["message"]
    assert server.request("GET", "/invocations")[0] == 405
    assert server.request("GET", "/nope")[0] == 404
    assert _call(server, "PUT", "/models")[0] == 405
    assert "multi-model mode" in server.log()


def test_load_list_describe_invoke_unload(mme: Any) -> None:
    server = mme()
    a, b = _model(server, "a"), _model(server, "b", code=False, scale=10)
    assert _load(server, "a", a) == (200, {"status": "Workers scaled"})
    # relative urls are below the models root, as MMS's model store
    assert _load(server, "b", "b/model") == (200, {"status": "Workers scaled"})
    status, body = _load(server, "a", a)
    assert (status, body) == (409, {"code": 409, "type": "ConflictStatusException",
                                    "message": "Model a is already registered."})
    assert _call(server, "GET", "/models") == (200, {"models": [
        {"modelName": "a", "modelUrl": str(a)}, {"modelName": "b", "modelUrl": str(b)}]})
    assert _call(server, "GET", "/models?limit=1") == (200, {
        "models": [{"modelName": "a", "modelUrl": str(a)}], "nextPageToken": "1"})
    assert _call(server, "GET", "/models?limit=1&next_page_token=1") == (200, {
        "models": [{"modelName": "b", "modelUrl": str(b)}]})
    status, body = _call(server, "GET", "/models/a")
    assert status == 200 and (body["modelName"], body["modelUrl"]) == ("a", str(a))
    # both workers answer, whichever gets each fresh connection
    for _ in range(6):
        status, out = _call(server, "POST", "/models/a/invoke", {"values": [1, 2]},
                            **{"X-Amzn-SageMaker-Target-Model": "a.tar.gz"})
        assert status == 200 and out == {**out, "kind": "kind-a", "name": "a", "sum": 3,
                                         "target": "a.tar.gz"}
        # no code of its own: the image's handler, with the default codecs
        status, out = _call(server, "POST", "/models/b/invoke", [[1, 2], [3, 4]])
        assert (status, out) == (200, [30, 70])
        status, out = _call(server, "POST", "/invocations", {"values": [5]},
                            **{"X-Amzn-SageMaker-Target-Model": "a"})
        assert status == 200 and out["sum"] == 5
    # the same codecs and errors as /invocations
    assert server.request("POST", "/models/b/invoke", b"{oops",
                          {"Content-Type": "application/json"})[0] == 400
    assert server.request("POST", "/models/b/invoke", b"<x/>",
                          {"Content-Type": "application/xml"})[0] == 415
    assert _call(server, "GET", "/models/a/invoke")[0] == 405
    assert _call(server, "DELETE", "/models/a") == (200, {"status": 'Model "a" unregistered'})
    assert _call(server, "GET", "/models/a") == (404, {
        "code": 404, "type": "ModelNotFoundException", "message": "Model not found: a"})
    assert _call(server, "DELETE", "/models/a")[0] == 404
    assert _call(server, "POST", "/models/a/invoke", {"values": [1]})[0] == 404
    assert _names(server) == ["b"]
    # loaded again after the unload: a fresh copy
    assert _load(server, "a", a)[0] == 200
    assert _call(server, "POST", "/models/a/invoke", {"values": [4]})[1]["sum"] == 4


def test_bad_load_requests(mme: Any) -> None:
    server = mme()
    good = _model(server, "good")
    broken = _model(server, "broken", fail=True)
    (server.root / "models" / "file").write_text("not a dir")

    def raw_load(body: bytes) -> tuple[int, Any]:
        status, _, raw = server.request("POST", "/models", body,
                                        {"Content-Type": "application/json"})
        return status, json.loads(raw)

    status, body = raw_load(b"{nope")
    assert status == 400 and body["type"] == "BadRequestException"
    assert raw_load(b"[1, 2]")[0] == 400
    assert raw_load(b'{"model_name": "x"}') == (400, {
        "code": 400, "type": "BadRequestException", "message": "Parameter url is required."})
    assert raw_load(json.dumps({"url": str(good)}).encode())[0] == 400
    status, body = _load(server, "x", server.root / "models" / "absent")
    assert status == 404 and "absent" in body["message"]
    status, body = _load(server, "x", server.root / "models" / "file")
    assert status == 400 and "not a directory" in body["message"]
    status, body = _load(server, "broken", broken)
    assert status == 500 and "cannot load this one" in body["message"]
    assert body["type"] == "InternalServerException"
    # MMS also takes the fields as query parameters
    assert _call(server, "POST", f"/models?model_name=good&url={good}")[0] == 200
    assert _load(server, "again", f"file://{good}")[0] == 200
    assert _names(server) == ["again", "good"]


def test_unload_is_seen_by_every_worker(mme: Any) -> None:
    server = mme()
    model = _model(server, "big", mb=20)
    pids = server.worker_pids()
    assert len(pids) == 2
    before = {pid: _rss(pid) for pid in pids}
    # twice: from the second time on, glibc serves 20 MiB from the heap, which only
    # malloc_trim gives back
    for round_ in range(2):
        assert _load(server, "big", model)[0] == 200
        served: set[int] = set()
        for _ in range(200):  # fresh connections until both workers have loaded their copy
            status, out = _call(server, "POST", "/models/big/invoke", {"values": [1]})
            assert status == 200
            served.add(out["pid"])
            if served == set(pids):
                break
        assert served == set(pids)
        assert all(_rss(pid) > before[pid] + 18 * MIB for pid in pids)
        assert _call(server, "DELETE", "/models/big")[0] == 200
        # DELETE returned: every worker has already let its copy go
        assert all(_rss(pid) < before[pid] + 8 * MIB for pid in pids), ([(_rss(p) - before[p]) // MIB for p in pids], round_)
        for _ in range(10):
            assert _call(server, "POST", "/models/big/invoke", {"values": [1]})[0] == 404
            assert _call(server, "GET", "/models/big")[0] == 404


def test_lru_eviction_507_and_on_demand_loading(mme: Any) -> None:
    # 100 MiB for 2 workers: two 20 MiB models fit (2 x 2 x 20), a third does not
    server = mme({"SHIPYARD_MME_MEMORY_MB": "100"})
    a, b, c = (_model(server, name, mb=20) for name in "abc")
    huge = _model(server, "huge", mb=60)  # 2 x 60 > 100: never fits
    assert _load(server, "a", a)[0] == 200
    assert _load(server, "b", b)[0] == 200
    status, body = _call(server, "GET", "/models/a")
    assert 20 * MIB <= body["memoryBytes"] < 24 * MIB
    assert _call(server, "POST", "/models/a/invoke", {"values": [1]})[0] == 200  # b is now LRU
    assert _load(server, "c", c)[0] == 200
    assert _names(server) == ["a", "c"]
    assert _call(server, "POST", "/models/b/invoke", {"values": [1]})[0] == 404
    status, body = _load(server, "huge", huge)
    assert status == 507 and body["type"] == "OutOfMemoryError"
    assert "SHIPYARD_MME_MEMORY_MB" in body["message"]
    assert _names(server) == ["a", "c"]  # nothing unloaded for a model that can never fit
    # the target-model header loads a placed model on demand, evicting the LRU one (a)
    status, out = _call(server, "POST", "/invocations", {"values": [2, 3]},
                        **{"X-Amzn-SageMaker-Target-Model": "b"})
    assert status == 200 and (out["kind"], out["sum"]) == ("kind-b", 5)
    assert _names(server) == ["b", "c"]
    assert "unloaded a (least recently used) to make room for b" in server.log()
    for target in ("absent", "../opt-ml-0", "/etc"):
        status, body = _call(server, "POST", "/invocations", {"values": [1]},
                             **{"X-Amzn-SageMaker-Target-Model": target})
        assert (status, body["type"]) == (404, "ModelNotFoundException"), target


def test_concurrent_on_demand_loads_register_once(mme: Any) -> None:
    server = mme()
    _model(server, "m", mb=5)
    conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(8)]
    try:
        for conn in conns:
            conn.request("POST", "/invocations", b'{"values": [1]}',
                         {"Content-Type": "application/json",
                          "X-Amzn-SageMaker-Target-Model": "m"})
        statuses = [conn.getresponse().status for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    assert statuses == [200] * 8
    assert _names(server) == ["m"]


def test_memory_limit_detection(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    (v2 / "job").mkdir(parents=True)
    (v2 / "job" / "memory.max").write_text("536870912\n")
    (v2 / "memory.max").write_text("max\n")
    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text("0::/job\n")
    assert _cgroup_limit(proc_cgroup, v2) == 512 * MIB
    v1 = tmp_path / "v1"
    (v1 / "memory" / "docker" / "abc").mkdir(parents=True)
    (v1 / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text("268435456\n")
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    proc_cgroup.write_text("4:memory:/docker/abc\n3:cpu:/\n")
    assert _cgroup_limit(proc_cgroup, v1) == 256 * MIB
    assert _cgroup_limit(proc_cgroup, tmp_path / "none") is None
    host = memory_limit()
    assert host is not None and host > 64 * MIB
    assert default_budget(1000 * MIB) == 700 * MIB


# -- in a real container -------------------------------------------------------------------

CONTAINER_MODEL = """
def model_fn(model_dir):
    return len(open(model_dir + "/weights.txt").read())

def predict_fn(data, model):
    return {"model": model, "n": len(data["instances"])}
"""


@pytest.mark.docker
@pytest.mark.slow
def test_multi_model_in_container(docker_client: Any, base_image: str,
                                  scope_labels: dict[str, str], tmp_path: Path) -> None:
    image = build_image(docker_client, "toolkit-serve", {}, 'ENTRYPOINT ["serve"]\n')
    for name, weights in (("m1", "x" * 7), ("m2", "y" * 3)):
        model_dir = tmp_path / "models" / name / "model"
        (model_dir / "code").mkdir(parents=True)
        (model_dir / "weights.txt").write_text(weights)
        (model_dir / "code" / "inference.py").write_text(CONTAINER_MODEL)
    container = docker_client.containers.run(
        image, command=["serve"], name=f"shipyard-test-mme-{uuid.uuid4().hex[:12]}",
        labels=scope_labels, mem_limit="512m",
        volumes={str(tmp_path / "models"): {"bind": "/opt/ml/models", "mode": "ro"}},
        environment={"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
        ports={"8080/tcp": ("127.0.0.1", None)}, detach=True)

    def request(method: str, path: str, payload: Any = None,
                **headers: str) -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        status, raw = http_request(port, method, path, body,
                                   {"Content-Type": "application/json", **headers})
        return status, json.loads(raw) if raw else None

    try:
        port = wait_for_ping(container)
        # the default budget is 70 % of the container's 512 MiB cgroup limit
        assert "memory budget 358 MiB" in container.logs().decode()
        status, body = request("POST", "/invocations", {"instances": [1, 2]},
                               **{"X-Amzn-SageMaker-Target-Model": "m1"})
        assert (status, body) == (200, {"model": 7, "n": 2})
        assert request("POST", "/models",
                       {"model_name": "two", "url": "/opt/ml/models/m2/model"})[0] == 200
        assert request("POST", "/models/two/invoke", {"instances": [1]}) == (
            200, {"model": 3, "n": 1})
        assert request("GET", "/models")[1] == {"models": [
            {"modelName": "m1", "modelUrl": "/opt/ml/models/m1/model"},
            {"modelName": "two", "modelUrl": "/opt/ml/models/m2/model"}]}
        assert request("DELETE", "/models/two")[0] == 200
        assert request("POST", "/models/two/invoke", {"instances": [1]})[0] == 404
        container.stop(timeout=30)
        assert container.wait(timeout=10)["StatusCode"] == 0
    finally:
        container.remove(force=True)
