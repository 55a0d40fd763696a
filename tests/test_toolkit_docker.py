"""The toolkit inside a real image: ``ENTRYPOINT ["train"]``, ``docker run IMAGE train``, ``docker stop``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.contract.config_files import training_resource_config, write_json
from tests.support.images import build_image

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TRAIN_PY = """
import argparse, json, os, signal, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int)
parser.add_argument("--mode", default="train")
args = parser.parse_args()
model = os.environ["SM_MODEL_DIR"]
if args.mode == "wait":
    def on_term(signum, frame):
        open(os.path.join(model, "checkpoint.txt"), "w").write("saved on SIGTERM")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    open(os.path.join(model, "ready"), "w").close()
    while True:
        time.sleep(0.05)
with open(os.path.join(model, "model.json"), "w") as f:
    json.dump({"epochs": args.epochs, "pid": os.getpid(),
               "channel": os.environ["SM_CHANNEL_TRAINING"]}, f)
"""

DOCKERFILE = """
COPY train.py /opt/ml/code/train.py
ENV SAGEMAKER_PROGRAM=train.py
ENTRYPOINT ["train"]
"""


@pytest.fixture(scope="module")
def train_image(docker_client: Any, base_image: str) -> str:
    return build_image(docker_client, "toolkit-train", {"train.py": TRAIN_PY}, DOCKERFILE)


@pytest.fixture
def run_container(
    docker_client: Any, train_image: str, scope_labels: dict[str, str], tmp_path: Path
) -> Iterator[Any]:
    """Start the image with SageMaker's mounts; returns ``start(hps) -> (container, root)``."""
    containers: list[Any] = []

    def start(hps: dict[str, str]) -> tuple[Any, Path]:
        root = tmp_path / "opt-ml"
        config = root / "input" / "config"
        write_json(config / "hyperparameters.json", hps)
        write_json(
            config / "resourceconfig.json", training_resource_config("algo-1", ["algo-1"], "local")
        )
        write_json(config / "inputdataconfig.json", {"training": {"TrainingInputMode": "File"}})
        (root / "input" / "data" / "training").mkdir(parents=True)
        for sub in ("model", "output"):
            (root / sub).mkdir()
        volumes = {
            str(root / "input"): {"bind": "/opt/ml/input", "mode": "ro"},
            str(root / "model"): {"bind": "/opt/ml/model", "mode": "rw"},
            str(root / "output"): {"bind": "/opt/ml/output", "mode": "rw"},
        }
        container = docker_client.containers.run(
            train_image,
            command=["train"],  # SageMaker's `docker run IMAGE train`: argv is `train train`
            name=f"shipyard-test-train-{uuid.uuid4().hex[:12]}",
            labels=scope_labels,
            volumes=volumes,
            hostname="algo-1",
            network_mode="none",
            detach=True,
        )
        containers.append(container)
        return container, root

    yield start
    for container in containers:
        container.remove(force=True)


def test_entrypoint_train_writes_model_and_success(run_container: Any) -> None:
    container, root = run_container({"epochs": "3"})
    status = container.wait(timeout=120)
    logs = container.logs().decode()
    assert status["StatusCode"] == 0, logs
    model = json.loads((root / "model" / "model.json").read_text())
    assert model["epochs"] == 3
    assert model["channel"] == "/opt/ml/input/data/training"
    assert model["pid"] != 1  # the toolkit stays PID 1 and the script is its child
    assert (root / "output" / "success").exists()
    assert not (root / "output" / "failure").exists()


def test_docker_stop_reaches_the_script(run_container: Any) -> None:
    container, root = run_container({"mode": "wait"})
    ready = root / "model" / "ready"
    deadline = time.monotonic() + 120
    while not ready.exists():
        container.reload()
        assert container.status in ("created", "running"), container.logs().decode()
        assert time.monotonic() < deadline, "script never became ready"
        time.sleep(0.05)
    container.stop(timeout=60)
    status = container.wait(timeout=60)
    logs = container.logs().decode()
    assert status["StatusCode"] == 0, logs
    assert (root / "model" / "checkpoint.txt").read_text() == "saved on SIGTERM"
    assert "forwarding SIGTERM" in logs
    assert (root / "output" / "success").exists()
