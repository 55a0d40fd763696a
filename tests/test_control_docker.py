"""Training and processing jobs end to end: real images, a real Docker engine, real files.

Every image is built FROM the locally made Debian base image; images that use Shipyard's
toolkit get it installed from a wheel of this checkout.
"""

from __future__ import annotations

import json
import os
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.control import ControlPlane, Settings
from shipyard.runtimes import DockerRuntime
from tests.support import s3server
from tests.support.images import build_image

pytestmark = pytest.mark.docker
s3_server = s3server.s3_server
s3_bucket = s3server.s3_bucket

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


@pytest.fixture(scope="module")
def images(docker_client: Any, base_image: str) -> dict[str, str]:
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
        "processing": build_image(
            docker_client, "processing", {"p.py": PROCESSING},
            "COPY p.py /opt/program/", with_toolkit=False),
    }


@pytest.fixture
def plane(tmp_path: Path, docker_client: Any, scope_labels: dict[str, str]
          ) -> Iterator[ControlPlane]:
    runtime = DockerRuntime(docker_client, labels=scope_labels)
    cp = ControlPlane(Settings.load({"data_dir": str(tmp_path / "state"),
                                     "stop_grace_seconds": 3}, environ={}), runtime)
    yield cp
    cp.close()


def request(name: str, image: str, tmp: Path, **extra: Any) -> dict[str, Any]:
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    for i in range(3):
        (data / f"part-{i}.csv").write_text(f"{i},{i * 2}\n")
    req: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": "arn:aws:iam::000000000000:role/shipyard",
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "InputDataConfig": [{"ChannelName": "training", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": data.as_uri()}}}],
        "OutputDataConfig": {"S3OutputPath": (tmp / "out").as_uri()},
        "ResourceConfig": {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    req.update(extra)
    return req


def model_files(tmp: Path, name: str) -> dict[str, bytes]:
    with tarfile.open(tmp / "out" / name / "output" / "model.tar.gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def logs_of(plane: ControlPlane, kind: str, name: str) -> list[str]:
    return [e.message for e in plane.follow_logs(kind, name, follow=False)]


def wait_for_log(plane: ControlPlane, kind: str, name: str, text: str, timeout: float = 30
                 ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in logs_of(plane, kind, name)):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in the logs of {name}")


def test_seed_000_script_unchanged(plane: ControlPlane, images: dict[str, str],
                                   tmp_path: Path) -> None:
    plane.create_training_job(request("seed-000", images["seed000"], tmp_path))
    record = plane.wait("training", "seed-000", timeout=120)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    assert json.loads(model_files(tmp_path, "seed-000")["model.json"]) == {"training_files": 3}
    assert (tmp_path / "out" / "seed-000" / "output" / "output.tar.gz").is_file()


def test_seed_002_style_numpy_with_hard_coded_paths(plane: ControlPlane, images: dict[str, str],
                                                    tmp_path: Path) -> None:
    rng_rows = [f"{i / 10},{(i % 7) / 10},{2 * i / 10 - (i % 7) / 10}\n" for i in range(40)]
    for channel, rows in (("train", rng_rows[:30]), ("val", rng_rows[30:])):
        folder = tmp_path / channel
        folder.mkdir()
        (folder / "data.csv").write_text("".join(rows))
    channels = [{"ChannelName": ch, "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": str(tmp_path / ch)}}} for ch in ("train", "val")]
    algo = {"TrainingImage": images["seed002"], "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "train:loss", "Regex": r"train_loss=([0-9.e-]+)"},
                                  {"Name": "validation:loss", "Regex": r"val_loss=([0-9.e-]+)"}]}
    plane.create_training_job(request(
        "seed-002", images["seed002"], tmp_path, InputDataConfig=channels,
        AlgorithmSpecification=algo,
        HyperParameters={"learning-rate": "0.05", "epochs": "200"}))
    record = plane.wait("training", "seed-002", timeout=120)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    files = model_files(tmp_path, "seed-002")
    assert set(files) == {"final.npy", "meta.json"}
    final = {m["MetricName"]: m["Value"] for m in record["FinalMetricDataList"]}
    assert final["validation:loss"] < 0.1
    series = plane.metric_series("training", "seed-002", "train:loss")
    assert len(series) == 200
    assert series[-1]["Value"] < series[0]["Value"]


def test_failure_file_becomes_failure_reason(plane: ControlPlane, images: dict[str, str],
                                             tmp_path: Path) -> None:
    plane.create_training_job(request("fails", images["behaviours"], tmp_path,
                                      Environment={"MODE": "failure-file"}))
    record = plane.wait("training", "fails", timeout=60)
    assert record["TrainingJobStatus"] == "Failed"
    assert record["FailureReason"].startswith("ValueError: bad column 'price'\nxxx")
    assert len(record["FailureReason"]) == 1024


def test_exit_code_without_failure_file(plane: ControlPlane, images: dict[str, str],
                                        tmp_path: Path) -> None:
    plane.create_training_job(request("exit-3", images["behaviours"], tmp_path,
                                      Environment={"MODE": "exit-3"}))
    record = plane.wait("training", "exit-3", timeout=60)
    assert record["TrainingJobStatus"] == "Failed"
    assert "exited with code 3" in record["FailureReason"]
    assert "about to fail" in record["FailureReason"]


def test_toolkit_failure_keeps_user_exit_code_in_reason(
        plane: ControlPlane, images: dict[str, str], tmp_path: Path) -> None:
    plane.create_training_job(request("tk-exit-3", images["toolkit-behaviours"], tmp_path,
                                      Environment={"MODE": "exit-3"}))
    record = plane.wait("training", "tk-exit-3", timeout=60)
    assert record["TrainingJobStatus"] == "Failed"
    assert "3" in record["FailureReason"]
    assert "about to fail" in record["FailureReason"]


def test_oom_killed_container(plane: ControlPlane, images: dict[str, str],
                              tmp_path: Path) -> None:
    # ml.t3.medium = 4 GiB: the script asks for 10 GiB.
    plane.create_training_job(request(
        "oom", images["behaviours"], tmp_path, Environment={"MODE": "oom"},
        ResourceConfig={"InstanceType": "ml.t3.medium", "InstanceCount": 1}))
    record = plane.wait("training", "oom", timeout=120)
    assert record["TrainingJobStatus"] == "Failed"
    assert record["FailureReason"].startswith("OutOfMemoryError")


def test_stop_reaches_script_through_toolkit_and_keeps_checkpoint(
        plane: ControlPlane, images: dict[str, str], tmp_path: Path) -> None:
    plane.create_training_job(request("stop-ckpt", images["toolkit-behaviours"], tmp_path,
                                      Environment={"MODE": "checkpoint-on-sigterm"}))
    wait_for_log(plane, "training", "stop-ckpt", "ready")
    started = time.monotonic()
    plane.stop_training_job("stop-ckpt")
    assert plane.describe_training_job("stop-ckpt")["TrainingJobStatus"] == "Stopping"
    record = plane.wait("training", "stop-ckpt", timeout=60)
    assert time.monotonic() - started < 3  # well inside the grace period: it exited itself
    assert record["TrainingJobStatus"] == "Stopped"
    assert [t["Status"] for t in record["SecondaryStatusTransitions"]][-2:] == [
        "Stopping", "Stopped"] or "Uploading" in [
        t["Status"] for t in record["SecondaryStatusTransitions"]]
    assert json.loads(model_files(tmp_path, "stop-ckpt")["checkpoint.json"]) == {
        "saved_on": "SIGTERM"}
    assert "checkpoint saved" in logs_of(plane, "training", "stop-ckpt")


def test_stop_kills_script_that_ignores_sigterm(plane: ControlPlane, images: dict[str, str],
                                                tmp_path: Path) -> None:
    plane.create_training_job(request("stop-deaf", images["behaviours"], tmp_path,
                                      Environment={"MODE": "ignore-sigterm"}))
    wait_for_log(plane, "training", "stop-deaf", "ready")
    started = time.monotonic()
    plane.stop_training_job("stop-deaf")
    record = plane.wait("training", "stop-deaf", timeout=60)
    elapsed = time.monotonic() - started
    assert record["TrainingJobStatus"] == "Stopped"
    assert 3 <= elapsed < 15  # the 3 s grace, then SIGKILL


def test_max_runtime(plane: ControlPlane, images: dict[str, str], tmp_path: Path) -> None:
    plane.create_training_job(request(
        "too-slow", images["behaviours"], tmp_path, Environment={"MODE": "sleep"},
        StoppingCondition={"MaxRuntimeInSeconds": 1}))
    record = plane.wait("training", "too-slow", timeout=60)
    assert record["TrainingJobStatus"] == "Failed"
    assert record["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert "MaxRuntimeInSeconds" in record["FailureReason"]


def test_metrics_from_live_logs(plane: ControlPlane, images: dict[str, str],
                                tmp_path: Path) -> None:
    algo = {"TrainingImage": images["behaviours"], "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "loss", "Regex": r"loss=(\S+)"},
                                  {"Name": "accuracy", "Regex": r"accuracy=(\S+)"}]}
    plane.create_training_job(request("metrics", images["behaviours"], tmp_path,
                                      AlgorithmSpecification=algo,
                                      Environment={"MODE": "metrics"}))
    record = plane.wait("training", "metrics", timeout=60)
    final = {m["MetricName"]: m["Value"] for m in record["FinalMetricDataList"]}
    assert final == {"loss": 0.25, "accuracy": 0.8}
    assert [p["Value"] for p in plane.metric_series("training", "metrics", "loss")] == [
        1.0, 0.5, 0.333, 0.25]


def test_two_instances_reach_each_other(plane: ControlPlane, images: dict[str, str],
                                        tmp_path: Path) -> None:
    plane.create_training_job(request(
        "peers", images["behaviours"], tmp_path, Environment={"MODE": "peers"},
        ResourceConfig={"InstanceType": "local", "InstanceCount": 2}))
    record = plane.wait("training", "peers", timeout=120)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    files = model_files(tmp_path, "peers")
    one, two = json.loads(files["algo-1.json"]), json.loads(files["algo-2.json"])
    assert one["message"] == "hello from algo-2"
    assert set(one["addresses"]) == {"algo-1", "algo-2"}
    assert one["addresses"] == two["addresses"]
    assert plane.log_hosts("training", "peers") == ["algo-1", "algo-2"]


def test_network_isolation(plane: ControlPlane, images: dict[str, str], tmp_path: Path) -> None:
    plane.create_training_job(request("isolated", images["behaviours"], tmp_path,
                                      Environment={"MODE": "network"},
                                      EnableNetworkIsolation=True))
    plane.wait("training", "isolated", timeout=60)
    interfaces = [line for line in logs_of(plane, "training", "isolated")
                  if line.startswith("interfaces")]
    assert interfaces == ["interfaces ['lo']"]


def test_processing_two_inputs_one_output(plane: ControlPlane, images: dict[str, str],
                                          tmp_path: Path) -> None:
    for name, files in (("first", {"a.txt": "alpha", "sub/b.txt": "beta"}),
                        ("second", {"c.txt": "gamma"})):
        for rel, text in files.items():
            path = tmp_path / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    arn = plane.create_processing_job({
        "ProcessingJobName": "proc",
        "RoleArn": "arn:aws:iam::000000000000:role/shipyard",
        "AppSpecification": {"ImageUri": images["processing"],
                             "ContainerEntrypoint": ["python3", "/opt/program/p.py"],
                             "ContainerArguments": ["--mode", "full"]},
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.large",
                                                  "InstanceCount": 1, "VolumeSizeInGB": 5}},
        "ProcessingInputs": [
            {"InputName": n, "S3Input": {"S3Uri": (tmp_path / n).as_uri(),
                                         "LocalPath": f"/opt/ml/processing/input/{n}",
                                         "S3DataType": "S3Prefix", "S3InputMode": "File"}}
            for n in ("first", "second")],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "report", "S3Output": {
            "S3Uri": (tmp_path / "report").as_uri(),
            "LocalPath": "/opt/ml/processing/output/report", "S3UploadMode": "EndOfJob"}}]},
    })["ProcessingJobArn"]
    assert arn.endswith("processing-job/proc")
    record = plane.wait("processing", "proc", timeout=60)
    assert record["ProcessingJobStatus"] == "Completed", record.get("FailureReason")
    assert record["ExitMessage"] == "processed 3 files"
    assert (tmp_path / "report" / "summary.txt").read_text().splitlines() == [
        "first/a.txt: alpha", "first/sub/b.txt: beta", "second/c.txt: gamma"]
    assert (tmp_path / "report" / "nested" / "count.txt").read_text() == "3"
    assert "args ['--mode', 'full'] env proc" in logs_of(plane, "processing", "proc")
    assert (tmp_path / "first" / "a.txt").read_text() == "alpha"  # inputs untouched


def test_s3_in_and_out(docker_client: Any, scope_labels: dict[str, str], s3_server: Any,
                       s3_bucket: str, images: dict[str, str], tmp_path: Path) -> None:
    boto = s3_server.boto()
    for i in range(5):
        boto.put_object(Bucket=s3_bucket, Key=f"datasets/train/part-{i}.csv", Body=b"1,2\n")
    settings = Settings.load({"data_dir": str(tmp_path / "state"),
                              "s3_endpoint_url": s3_server.url,
                              "s3_access_key_id": "testing",
                              "s3_secret_access_key": "testing"}, environ={})
    cp = ControlPlane(settings, DockerRuntime(docker_client, labels=scope_labels))
    try:
        cp.create_training_job(request(
            "s3-job", images["seed000"], tmp_path,
            InputDataConfig=[{"ChannelName": "training", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://{s3_bucket}/datasets/train"}}}],
            OutputDataConfig={"S3OutputPath": f"s3://{s3_bucket}/output"}))
        record = cp.wait("training", "s3-job", timeout=120)
    finally:
        cp.close()
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    key = "output/s3-job/output/model.tar.gz"
    assert record["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{s3_bucket}/{key}"
    local = tmp_path / "model.tar.gz"
    boto.download_file(s3_bucket, key, str(local))
    with tarfile.open(local) as tar:
        assert json.loads(tar.extractfile("model.json").read()) == {"training_files": 5}


def test_missing_s3_data_fails_before_the_container_runs(
        docker_client: Any, scope_labels: dict[str, str], s3_server: Any, s3_bucket: str,
        images: dict[str, str], tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": str(tmp_path / "state"),
                              "s3_endpoint_url": s3_server.url,
                              "s3_access_key_id": "testing",
                              "s3_secret_access_key": "testing"}, environ={})
    runtime = DockerRuntime(docker_client, labels=scope_labels)
    cp = ControlPlane(settings, runtime)
    try:
        cp.create_training_job(request(
            "s3-missing", images["seed000"], tmp_path,
            InputDataConfig=[{"ChannelName": "training", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://{s3_bucket}/nothing-here/"}}}]))
        record = cp.wait("training", "s3-missing", timeout=60)
    finally:
        cp.close()
    assert record["TrainingJobStatus"] == "Failed"
    assert "nothing-here" in record["FailureReason"]
    assert "Training" not in [t["Status"] for t in record["SecondaryStatusTransitions"]]
    assert runtime.list({"org.shipyard.job-name": "s3-missing"}) == []


def test_control_plane_restart_while_job_runs(docker_client: Any, scope_labels: dict[str, str],
                                              images: dict[str, str], tmp_path: Path) -> None:
    """The supervisor dies mid-job; a new control plane reattaches and finishes the job."""
    settings = Settings.load({"data_dir": str(tmp_path / "state"), "runtime": "docker"},
                             environ={})
    runtime = DockerRuntime(docker_client, labels=scope_labels)
    first = ControlPlane(settings, runtime, launch="process")
    first.create_training_job(request("restart-running", images["behaviours"], tmp_path,
                                      Environment={"MODE": "sleep", "SLEEP": "4"}))
    first.create_training_job(request("restart-exited", images["behaviours"], tmp_path,
                                      Environment={"MODE": "sleep", "SLEEP": "1"}))
    for name in ("restart-running", "restart-exited"):
        wait_for_log(first, "training", name, "mode sleep")
    for proc in first.processes:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    first.close()
    # While no supervisor runs, the short job's container exits.
    time.sleep(2)
    second = ControlPlane(settings, runtime, launch="thread")
    assert sorted(n for _, n in second.ctx.store and [
        ("training", "restart-running"), ("training", "restart-exited")]) == [
        "restart-exited", "restart-running"]
    try:
        for name in ("restart-running", "restart-exited"):
            record = second.wait("training", name, timeout=60)
            assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
            assert model_files(tmp_path, name)["done"] == b"sleep"
            lines = logs_of(second, "training", name)
            assert lines.count("mode sleep argv ['train']") == 1  # resumed without repeats
    finally:
        second.close()
