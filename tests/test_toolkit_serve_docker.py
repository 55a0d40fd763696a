"""``serve`` inside a real image: ``ENTRYPOINT ["serve"]``, ``docker run IMAGE serve``, port 8080, ``docker stop``."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.containers import wait_for_ping
from tests.support.images import build_image
from tests.support.net import http_request

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# No numpy in the base image: the default JSON decoder hands predict_fn plain Python values.
INFERENCE_PY = """
def model_fn(model_dir):
    return lambda rows: [float(sum(r)) for r in rows]

def predict_fn(data, model, context):
    return {"predictions": model(data["instances"]), "custom": context.custom_attributes}
"""

DOCKERFILE = 'ENTRYPOINT ["serve"]\n'


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
        port = wait_for_ping(container)
        status, body = http_request(port, "POST", "/invocations",
                                    b'{"instances": [[1.0, 2.0, 3.0, 4.0]]}',
                                    {"Content-Type": "application/json; charset=utf-8",
                                     "X-Amzn-SageMaker-Custom-Attributes": "c=1"})
        assert status == 200, body
        assert json.loads(body) == {"predictions": [10.0], "custom": "c=1"}
        status, body = http_request(port, "POST", "/invocations", b"\x93NUMPY",
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
