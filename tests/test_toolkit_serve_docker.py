"""``serve`` inside a real image: ``ENTRYPOINT ["serve"]``, ``docker run IMAGE serve``, port 8080, ``docker stop``."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.images import build_image

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# No numpy in the base image: the default JSON decoder hands predict_fn plain Python values.
INFERENCE_PY = """
def model_fn(model_dir):
    return lambda rows: [float(sum(r)) for r in rows]

def predict_fn(data, model, context):
    return {"predictions": model(data["instances"]), "custom": context.custom_attributes}
"""

DOCKERFILE = 'ENTRYPOINT ["serve"]\n'


def _request(port: int, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_serve_in_container(docker_client: Any, base_image: str, scope_labels: dict[str, str],
                            tmp_path: Path) -> None:
    image = build_image(docker_client, "toolkit-serve", {}, DOCKERFILE)
    code = tmp_path / "model" / "code"
    code.mkdir(parents=True)
    (code / "inference.py").write_text(INFERENCE_PY)
    container = docker_client.containers.run(
        image,
        command=["serve"],  # SageMaker's `docker run IMAGE serve`: argv is `serve serve`
        name=f"shipyard-test-serve-{uuid.uuid4().hex[:12]}",
        labels=scope_labels,
        volumes={str(tmp_path / "model"): {"bind": "/opt/ml/model", "mode": "ro"}},
        environment={"SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
        ports={"8080/tcp": ("127.0.0.1", None)},
        detach=True,
    )
    try:
        port = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            container.reload()
            bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get("8080/tcp")
            if bindings:
                port = int(bindings[0]["HostPort"])
                try:
                    if _request(port, "GET", "/ping")[0] == 200:
                        break
                except OSError:
                    pass
            assert container.status in ("created", "running"), container.logs().decode()
            time.sleep(0.1)
        else:
            raise AssertionError(container.logs().decode())
        status, body = _request(port, "POST", "/invocations",
                                b'{"instances": [[1.0, 2.0, 3.0, 4.0]]}',
                                {"Content-Type": "application/json; charset=utf-8",
                                 "X-Amzn-SageMaker-Custom-Attributes": "c=1"})
        assert status == 200, body
        assert json.loads(body) == {"predictions": [10.0], "custom": "c=1"}
        status, body = _request(port, "POST", "/invocations", b"\x93NUMPY",
                                {"Content-Type": "application/x-npy"})
        assert status == 500 and b"needs numpy" in body
        began = time.monotonic()
        container.stop(timeout=30)
        assert time.monotonic() - began < 10
        assert container.wait(timeout=10)["StatusCode"] == 0
        logs = container.logs().decode()
        assert "listening on 0.0.0.0:8080 with 2 workers" in logs and "stopped" in logs
    finally:
        container.remove(force=True)
