"""An image built by `shipyard build` passes every `shipyard check`, end to end.

The project is what a user writes: a training script (that fails clearly on a bad
hyperparameter and trains for a while when asked), an `inference.py` (one request can be
slow), and a processing script; `shipyard build` makes the image, `shipyard check` runs every
static and dynamic check on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shipyard.cli import cli
from shipyard.settings import Settings
from tests.support.images import LABELS, SESSION_SCOPE
from tests.test_check import TIMEOUT_FLAGS

pytestmark = pytest.mark.docker

TRAIN_PY = """import json, os, time

hp = json.loads(os.environ["SM_HPS"])
if float(hp.get("learning_rate", 0.1)) < 0:
    raise ValueError(f"learning_rate must be >= 0, got {hp['learning_rate']}")
print("training", flush=True)
time.sleep(float(hp.get("sleep", 0)))
rows = os.listdir(os.environ["SM_CHANNEL_TRAINING"])
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
    json.dump({"files": len(rows)}, f)
"""

INFERENCE_PY = """import json, os, time

def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.json")) as f:
        return json.load(f)

def predict_fn(data, model):
    if data == "slow":
        time.sleep(2)
    return {"model": model, "echo": data}
"""

PROCESS_PY = """import os
rows = sorted(os.listdir("/opt/ml/processing/input/data"))
os.makedirs("/opt/ml/processing/output/result", exist_ok=True)
with open("/opt/ml/processing/output/result/files.txt", "w") as f:
    f.write("\\n".join(rows))
"""


def test_built_image_passes_every_check(docker_client: Any, base_image: str,
                                        tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(TRAIN_PY)
    (project / "inference.py").write_text(INFERENCE_PY)
    (project / "process.py").write_text(PROCESS_PY)
    (project / "shipyard.toml").write_text('[build]\nname = "build-check-test"\n')
    data = tmp_path / "in"
    data.mkdir()
    (data / "rows.csv").write_text("1,2\n")
    (tmp_path / "payload.json").write_text('{"x": [1, 2]}')
    (tmp_path / "slow.json").write_text('"slow"')
    settings = Settings.load({"data_dir": str(tmp_path / "state")}, environ={})
    env = {"SHIPYARD_DATA_DIR": str(tmp_path / "state"), "SHIPYARD_SCOPE": SESSION_SCOPE}

    built = CliRunner().invoke(cli, ["build", str(project), "--json",
                                     *(f"--label={k}={v}" for k, v in LABELS.items())],
                               obj=settings, env=env, catch_exceptions=False)
    assert built.exit_code == 0, built.output
    tag = json.loads(built.stdout)["tag"]

    checked = CliRunner().invoke(cli, [
        "check", tag, "--json", "--train", "--serve", "--process",
        "--slow-hyperparameter", "sleep=60", "--bad-hyperparameter", "learning_rate=-1",
        "--payload", str(tmp_path / "payload.json"),
        "--slow-payload", str(tmp_path / "slow.json"),
        "--processing-input", f"{data}=/opt/ml/processing/input/data",
        "--processing-output", "/opt/ml/processing/output/result",
        "--processing-entrypoint", "python3 /opt/program/process.py",
        *TIMEOUT_FLAGS], env=env, catch_exceptions=False)
    report = json.loads(checked.stdout)
    not_passed = {c["id"]: (c["status"], c["detail"]) for c in report["checks"]
                  if c["status"] != "PASS"}
    assert not_passed == {}, not_passed
    assert checked.exit_code == 0
    # Every check ran, statically and by running train, serve and processing.
    assert {"train-sigterm", "serve-sigterm-drain", "process-outputs", "no-credentials-layers",
            "user-non-root", "entrypoint-exec-form"} <= {c["id"] for c in report["checks"]}
