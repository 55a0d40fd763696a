"""Jobs on the process runtime: no container engine, the same contract in a per-job root."""

from __future__ import annotations

import json
import time
from pathlib import Path

from shipyard.control import ControlPlane
from shipyard.runtimes import ProcessRuntime
from shipyard.settings import Settings
from tests.support.files import tar_files, write_tar_gz

HARD_CODED = '''import json, os
rows = sorted(os.listdir("/opt/ml/input/data/training"))
hp = json.load(open("/opt/ml/input/config/hyperparameters.json"))
with open("/opt/ml/model/model.json", "w") as f:
    json.dump({"rows": rows, "hp": hp}, f)
print("trained on", len(rows), "files")
'''

TOOLKIT_STYLE = '''import argparse, json, os, signal, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--mode", default="ok")
parser.add_argument("--epochs", type=int, default=1)
args = parser.parse_args()
if args.mode == "wait-for-stop":
    def stop(signum, frame):
        open(os.path.join(os.environ["SM_MODEL_DIR"], "stopped"), "w").write("SIGTERM")
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
files = os.listdir(os.environ["SM_CHANNEL_TRAINING"])
json.dump({"files": sorted(files), "host": os.environ["SM_CURRENT_HOST"]},
          open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w"))
'''


def _plane(tmp: Path) -> ControlPlane:
    settings = Settings.load({"data_dir": str(tmp / "state"), "runtime": "process",
                              "stop_grace_seconds": 5}, environ={})
    plane = ControlPlane(settings)
    assert isinstance(plane.ctx.runtime, ProcessRuntime)
    return plane


def _request(name: str, project: Path, tmp: Path, **extra: object) -> dict[str, object]:
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    for i in range(2):
        (data / f"{i}.csv").write_text(str(i))
    req: dict[str, object] = {
        "TrainingJobName": name,
        "RoleArn": "arn:aws:iam::000000000000:role/shipyard",
        "AlgorithmSpecification": {"TrainingImage": str(project), "TrainingInputMode": "File"},
        "InputDataConfig": [{"ChannelName": "training", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": str(data)}}}],
        "OutputDataConfig": {"S3OutputPath": (tmp / "out").as_uri()},
        "ResourceConfig": {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "HyperParameters": {"epochs": "2"},
    }
    req.update(extra)
    return req


def _model(tmp: Path, name: str, member: str) -> bytes:
    return tar_files(tmp / "out" / name / "output" / "model.tar.gz")[member]


def test_project_folder_with_toolkit_style_script(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(TOOLKIT_STYLE)
    plane = _plane(tmp_path)
    plane.create("training", _request("proc-rt", project, tmp_path))
    record = plane.wait("training", "proc-rt", timeout=60)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    assert json.loads(_model(tmp_path, "proc-rt", "model.json")) == {
        "files": ["0.csv", "1.csv"], "host": "algo-1"}


def test_script_with_hard_coded_opt_ml_paths(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(HARD_CODED)
    plane = _plane(tmp_path)
    assert plane.ctx.runtime.private_mount_namespace  # type: ignore[attr-defined]
    plane.create("training", _request("proc-hard", project, tmp_path))
    record = plane.wait("training", "proc-hard", timeout=60)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    assert json.loads(_model(tmp_path, "proc-hard", "model.json")) == {
        "rows": ["0.csv", "1.csv"], "hp": {"epochs": "2"}}


def test_stop_on_process_runtime(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(TOOLKIT_STYLE)
    plane = _plane(tmp_path)
    plane.create("training", _request("proc-stop", project, tmp_path,
                                       HyperParameters={"mode": "wait-for-stop"}))
    deadline = time.monotonic() + 30
    while not any(e.message == "ready" for e in plane.follow_logs("training", "proc-stop",
                                                                   follow=False)):
        assert time.monotonic() < deadline, "the job never became ready"
        time.sleep(0.05)
    plane.stop("training", "proc-stop")
    record = plane.wait("training", "proc-stop", timeout=30)
    assert record["TrainingJobStatus"] == "Stopped"
    assert _model(tmp_path, "proc-stop", "stopped") == b"SIGTERM"


def test_multi_host_needs_an_engine(tmp_path: Path) -> None:
    import pytest

    from shipyard.errors import ValidationError

    project = tmp_path / "project"
    project.mkdir()
    plane = _plane(tmp_path)
    with pytest.raises(ValidationError, match="container engine"):
        plane.create("training", _request(
            "proc-multi", project, tmp_path,
            ResourceConfig={"InstanceType": "local", "InstanceCount": 2}))


def test_endpoint_on_the_process_runtime(tmp_path: Path) -> None:
    """`serve` from a project folder, no engine: the port is moved with SAGEMAKER_BIND_TO_PORT."""
    import asyncio

    from shipyard.control.endpoints.invocation import InvokeRequest

    project = tmp_path / "project"
    project.mkdir()
    (project / "inference.py").write_text(
        "def model_fn(model_dir):\n"
        "    return open(model_dir + '/w.txt').read()\n"
        "def predict_fn(data, model):\n"
        "    return {'w': model, 'n': len(data)}\n")
    archive = write_tar_gz(tmp_path / "model.tar.gz", {"w.txt": b"w9"})
    plane = _plane(tmp_path)
    loop = asyncio.new_event_loop()
    try:
        plane.create("model", {"ModelName": "pm", "PrimaryContainer": {
            "Image": str(project), "ModelDataUrl": str(archive),
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py",
                            "SAGEMAKER_MODEL_SERVER_WORKERS": "1"}}})
        plane.create("endpoint-config", {"EndpointConfigName": "pc", "ProductionVariants": [
            {"VariantName": "AllTraffic", "ModelName": "pm", "InitialInstanceCount": 2}]})
        plane.create("endpoint", {"EndpointName": "pe", "EndpointConfigName": "pc"})
        record = plane.wait_endpoint("pe", timeout=60)
        assert record["EndpointStatus"] == "InService", record.get("FailureReason")
        for _ in range(4):
            result = loop.run_until_complete(plane.invoke(InvokeRequest(
                endpoint="pe", body=b"[1, 2, 3]", content_type="application/json")))
            assert json.loads(result.body) == {"w": "w9", "n": 3}
        plane.delete("endpoint", "pe")
        deadline = time.monotonic() + 60
        while plane.ctx.store.list_jobs("endpoint") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert plane.ctx.runtime.list({"org.shipyard.job-name": "pe"}) == []
    finally:
        loop.close()
        plane.close()
