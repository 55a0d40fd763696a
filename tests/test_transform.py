"""Transform jobs driven end to end on the process runtime: real ``serve`` processes answering
real HTTP, real files, and a real (moto) S3 server for the s3:// case.

The model is a stdlib ``serve`` program in the contract's shape: each CSV row's values are
summed; a row saying ``fail`` gets a 500, ``bad`` a 400, ``hang`` no answer; the body ``env``
answers the container's ``SAGEMAKER_*`` environment. ``EXECUTION_PARAMETERS`` (JSON) is what
``GET /execution-parameters`` answers, and every request is logged to ``REQUEST_LOG``.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.contract.labels import JOB_NAME_LABEL
from shipyard.control import ControlPlane
from shipyard.control.context import Context
from shipyard.control.endpoints.models import new_model, validate_model
from shipyard.control.endpoints.serving import VariantSpec, start_instance
from shipyard.control.state import records
from shipyard.control.transform.job import KIND, TransformJob
from shipyard.control.transform.request import new_record, validate
from shipyard.runtimes import DockerRuntime, ProcessRuntime
from shipyard.settings import Settings
from tests.support import s3server
from tests.support.files import model_tarball, write_tree
from tests.support.s3server import S3Server

s3_server = s3server.s3_server
s3_bucket = s3server.s3_bucket

SERVE = r'''#!/usr/bin/env python3
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if os.environ.get("MODE") == "exit":
    print("model failed to load: no weights", flush=True)
    sys.exit(3)
LOG = os.environ.get("REQUEST_LOG")
PARAMS = os.environ.get("EXECUTION_PARAMETERS")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, ctype="text/csv"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/ping":
            return self.answer(200, b"")
        if self.path == "/execution-parameters" and PARAMS:
            return self.answer(200, PARAMS.encode(), "application/json")
        self.answer(404, b"")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if LOG:
            with open(LOG, "a") as log:
                log.write(json.dumps({"size": len(body), "rows": body.count(b"\n") + 1,
                                      "type": self.headers.get("Content-Type"),
                                      "accept": self.headers.get("Accept")}) + "\n")
        text = body.decode()
        if os.environ.get("CHATTY"):
            for i in range(int(os.environ["CHATTY"])):
                sys.stdout.write(f"row {i}\n")
            print("scored", flush=True)
        if text == "env":
            env = {k: v for k, v in os.environ.items() if k.startswith(("SAGEMAKER_", "JOB_"))}
            return self.answer(200, json.dumps(env, sort_keys=True).encode(), "application/json")
        if "hang" in text:
            time.sleep(60)
        if "fail" in text:
            return self.answer(500, b"cannot score a row that says fail")
        if "bad" in text:
            return self.answer(400, b"bad row")
        rows = [sum(float(v) for v in line.split(",")) for line in text.split("\n")]
        self.answer(200, "\n".join("%g" % r for r in rows).encode())


port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
print(f"serving on {port}", flush=True)
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


class Harness:
    def __init__(self, tmp: Path, ctx: Context) -> None:
        self.tmp, self.ctx = tmp, ctx
        self.project = tmp / "project"
        self.project.mkdir()
        (self.project / "serve").write_text(SERVE)
        (self.project / "serve").chmod(0o755)
        self.requests = tmp / "requests.log"

    def model(self, name: str = "m", **env: str) -> str:
        req = validate_model({"ModelName": name, "PrimaryContainer": {
            "Image": str(self.project),
            "Environment": {"REQUEST_LOG": str(self.requests), **env}}})
        self.ctx.store.insert_job("model", name, f"arn:model/{name}", "Created",
                                  new_model(req, f"arn:model/{name}", records.now()), {})
        return name

    def create(self, name: str, input_uri: str, output_uri: str, **extra: Any) -> None:
        request: dict[str, Any] = {
            "TransformJobName": name, "ModelName": extra.pop("ModelName", "m"),
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
                "ContentType": "text/csv", "SplitType": "Line"},
            "TransformOutput": {"S3OutputPath": output_uri, "AssembleWith": "Line",
                                "Accept": "text/csv"},
            "TransformResources": {"InstanceType": "local", "InstanceCount": 1},
        }
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(request.get(key), dict):
                request[key].update(value)
            else:
                request[key] = value
        req = validate(request)
        self.ctx.store.insert_job(KIND, name, f"arn:transform-job/{name}", records.IN_PROGRESS,
                                  new_record(req, f"arn:transform-job/{name}", records.now()), {})

    def run(self, name: str) -> dict[str, Any]:
        assert TransformJob(self.ctx, name).run()
        return self.ctx.store.get_job(KIND, name).record

    def logged(self) -> list[dict[str, Any]]:
        if not self.requests.exists():
            return []
        return [json.loads(line) for line in self.requests.read_text().splitlines()]

    def leftovers(self, name: str) -> list[str]:
        return self.ctx.runtime.list({JOB_NAME_LABEL: name})


def _context(tmp: Path, **settings: Any) -> Context:
    loaded = Settings.load({"data_dir": str(tmp / "state"), "runtime": "process",
                            "endpoint_startup_timeout_seconds": 20, **settings}, environ={})
    return Context.build(loaded, ProcessRuntime(loaded.data_dir / "processes"))


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    ctx = _context(tmp_path)
    harness = Harness(tmp_path, ctx)
    harness.model()
    try:
        yield harness
    finally:
        ctx.store.close()


def _data(tmp: Path, files: dict[str, bytes]) -> Path:
    return write_tree(tmp / "input", files)


def test_csv_objects_become_out_files(h: Harness) -> None:
    inputs = _data(h.tmp, {"a.csv": b"1,2\r\n3,4\r\n", "nested/b.csv": b"10,20\n30,40\n50,60",
                           "empty.csv": b""})
    out = h.tmp / "out"
    h.create("tj-csv", inputs.as_uri(), out.as_uri(), MaxPayloadInMB=1)
    record = h.run("tj-csv")
    assert record["TransformJobStatus"] == "Completed", record.get("FailureReason")
    assert (out / "a.csv.out").read_bytes() == b"3\n7\n"
    assert (out / "nested" / "b.csv.out").read_bytes() == b"30\n70\n110\n"
    assert (out / "empty.csv.out").read_bytes() == b""
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
        "a.csv.out", "b.csv.out", "empty.csv.out"], "no partial files are left"
    # MultiRecord by default: one request per non-empty object, with the job's headers.
    assert sorted((r["rows"], r["type"], r["accept"]) for r in h.logged()) == [
        (2, "text/csv", "text/csv"), (3, "text/csv", "text/csv")]
    assert record["BatchStrategy"] == "MultiRecord" and record["MaxPayloadInMB"] == 1
    assert record["MaxConcurrentTransforms"] == 1
    assert record["CreationTime"] <= record["TransformStartTime"] <= record["TransformEndTime"]
    assert h.leftovers("tj-csv") == [], "containers are stopped and removed"
    assert h.ctx.logs.hosts(KIND, "tj-csv") == ["algo-1"]
    assert "serving on" in "\n".join(h.ctx.logs.tail_text(KIND, "tj-csv", "algo-1"))


def test_ten_thousand_lines_in_bounded_requests(h: Harness) -> None:
    line = b"," .join(b"%d" % (i % 10) for i in range(60))  # 119 bytes, sums to 270
    inputs = _data(h.tmp, {"big.csv": (line + b"\n") * 10_000})
    out = h.tmp / "out"
    h.create("tj-big", str(inputs), str(out), MaxPayloadInMB=1, MaxConcurrentTransforms=4)
    started = time.monotonic()
    record = h.run("tj-big")
    elapsed = time.monotonic() - started
    assert record["TransformJobStatus"] == "Completed", record.get("FailureReason")
    assert (out / "big.csv.out").read_bytes() == b"270\n" * 10_000
    logged = h.logged()
    assert len(logged) == 2, "1.2 MB of rows in 1 MiB requests"
    assert all(r["size"] <= 1024 * 1024 for r in logged)
    assert sum(r["rows"] for r in logged) == 10_000
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_execution_parameters_fill_what_the_request_left_unset(h: Harness) -> None:
    h.model("m-params", EXECUTION_PARAMETERS=json.dumps(
        {"BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 2, "MaxConcurrentTransforms": 3}))
    inputs = _data(h.tmp, {"a.csv": b"1\n2\n3\n4\n"})
    out = h.tmp / "out"
    h.create("tj-params", inputs.as_uri(), out.as_uri(), ModelName="m-params")
    record = h.run("tj-params")
    assert record["TransformJobStatus"] == "Completed", record.get("FailureReason")
    assert (out / "a.csv.out").read_bytes() == b"1\n2\n3\n4\n"
    assert [r["rows"] for r in h.logged()] == [1, 1, 1, 1], "SingleRecord from the container"
    assert (record["BatchStrategy"], record["MaxPayloadInMB"],
            record["MaxConcurrentTransforms"]) == ("SingleRecord", 2, 3)
    # The request wins over the container.
    h.create("tj-params-2", inputs.as_uri(), (h.tmp / "out2").as_uri(), ModelName="m-params",
             BatchStrategy="MultiRecord")
    record = h.run("tj-params-2")
    assert record["BatchStrategy"] == "MultiRecord" and record["MaxConcurrentTransforms"] == 3
    assert [r["rows"] for r in h.logged()][4:] == [4]


def test_container_sees_the_batch_environment(h: Harness) -> None:
    inputs = _data(h.tmp, {"env.txt": b"env"})
    out = h.tmp / "out"
    h.create("tj-env", inputs.as_uri(), out.as_uri(), BatchStrategy="SingleRecord",
             MaxPayloadInMB=5, MaxConcurrentTransforms=2, Environment={"JOB_FLAG": "on"},
             TransformInput={"SplitType": "None"}, TransformOutput={"AssembleWith": "None"})
    record = h.run("tj-env")
    assert record["TransformJobStatus"] == "Completed", record.get("FailureReason")
    env = json.loads((out / "env.txt.out").read_bytes())
    # The process runtime adds where the server binds and its contract root.
    runtime_set = {"SAGEMAKER_BIND_TO_PORT", "SAGEMAKER_BASE_DIR"}
    assert {k: v for k, v in env.items() if k not in runtime_set} == {
        "JOB_FLAG": "on", "SAGEMAKER_BATCH": "true", "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "2", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "5"}


def test_join_and_filters_through_a_real_model(h: Harness) -> None:
    inputs = _data(h.tmp, {"rows.csv": gzip.compress(b"id-1,1,2\nid-2,3,4\n")})
    out = h.tmp / "out"
    h.create("tj-join", inputs.as_uri(), out.as_uri(),
             TransformInput={"CompressionType": "Gzip"},
             DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input",
                             "OutputFilter": "$[0,-1]"})
    record = h.run("tj-join")
    assert record["TransformJobStatus"] == "Completed", record.get("FailureReason")
    assert (out / "rows.csv.out").read_bytes() == b"id-1,3\nid-2,7\n"


def test_a_failing_object_fails_the_job_with_the_container_message(h: Harness) -> None:
    inputs = _data(h.tmp, {"a-good.csv": b"1\n2\n", "b-bad.csv": b"1\nfail\n3\n"})
    out = h.tmp / "out"
    h.create("tj-fail", inputs.as_uri(), out.as_uri(), BatchStrategy="SingleRecord",
             ModelClientConfig={"InvocationsMaxRetries": 1})
    record = h.run("tj-fail")
    assert record["TransformJobStatus"] == "Failed"
    assert record["FailureReason"] == (
        "b-bad.csv: the model answered 500 to request 2 (line 2): cannot score a row that"
        " says fail (tried 2 times)")
    assert (out / "a-good.csv.out").read_bytes() == b"1\n2\n"
    assert not (out / "b-bad.csv.out").exists(), "partial objects are not written"
    assert len(h.logged()) == 5, "a-good: 2, b-bad: line 1, then line 2 twice; line 3 never"
    assert h.leftovers("tj-fail") == []


def test_a_client_error_is_not_retried(h: Harness) -> None:
    inputs = _data(h.tmp, {"a.csv": b"bad\n"})
    h.create("tj-400", inputs.as_uri(), (h.tmp / "out").as_uri())
    record = h.run("tj-400")
    assert record["FailureReason"] == "a.csv: the model answered 400 to request 1 (line 1): bad row"
    assert len(h.logged()) == 1


def test_bad_input_data_names_the_object_and_line(h: Harness) -> None:
    inputs = _data(h.tmp, {"x.csv": b"1,2\n3\n"})
    h.create("tj-data", inputs.as_uri(), (h.tmp / "out").as_uri(),
             DataProcessing={"InputFilter": "$[1]"})
    record = h.run("tj-data")
    assert record["TransformJobStatus"] == "Failed"
    assert record["FailureReason"] == "x.csv: line 2: $[1]: index 1 is outside an array of 1"


def test_a_container_that_never_serves_fails_the_job(h: Harness) -> None:
    h.model("m-exit", MODE="exit")
    inputs = _data(h.tmp, {"a.csv": b"1\n"})
    h.create("tj-exit", inputs.as_uri(), (h.tmp / "out").as_uri(), ModelName="m-exit")
    record = h.run("tj-exit")
    assert record["TransformJobStatus"] == "Failed"
    assert "exited (exit code 3)" in record["FailureReason"]
    assert "no weights" in record["FailureReason"]
    assert "TransformStartTime" not in record


def test_missing_model_and_missing_input(h: Harness) -> None:
    h.create("tj-nomodel", h.tmp.as_uri(), (h.tmp / "out").as_uri(), ModelName="ghost")
    record = h.run("tj-nomodel")
    assert record["TransformJobStatus"] == "Failed"
    assert record["FailureReason"] == 'Could not find model "arn:aws:sagemaker:us-east-1:' \
        '000000000000:model/ghost".'
    h.create("tj-noinput", (h.tmp / "nothing").as_uri(), (h.tmp / "out").as_uri())
    record = h.run("tj-noinput")
    assert record["TransformJobStatus"] == "Failed"
    assert "no such file or folder" in record["FailureReason"]
    assert h.leftovers("tj-noinput") == []


def test_stop_ends_requests_in_flight(h: Harness) -> None:
    inputs = _data(h.tmp, {"a.csv": b"1\n", "b.csv": b"hang\n", "c.csv": b"2\n"})
    out = h.tmp / "out"
    h.create("tj-stop", inputs.as_uri(), out.as_uri())
    finished = threading.Event()

    def drive() -> None:
        TransformJob(h.ctx, "tj-stop").run()
        finished.set()

    threading.Thread(target=drive, daemon=True).start()
    deadline = time.monotonic() + 20
    while len(h.logged()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(h.logged()) == 2, "a.csv answered, b.csv hangs"
    stopped_at = time.monotonic()
    h.ctx.store.mutate(KIND, "tj-stop", lambda rec, run: records.set_status(
        KIND, rec, records.STOPPING, records.now()))
    h.ctx.store.request_stop(KIND, "tj-stop")
    assert finished.wait(15)
    assert time.monotonic() - stopped_at < 10
    record = h.ctx.store.get_job(KIND, "tj-stop").record
    assert record["TransformJobStatus"] == "Stopped" and "FailureReason" not in record
    assert (out / "a.csv.out").exists() and not (out / "c.csv.out").exists()
    assert h.leftovers("tj-stop") == []


def test_s3_input_and_output(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    ctx = _context(tmp_path, s3_endpoint_url=s3_server.url, s3_access_key_id="testing",
                   s3_secret_access_key="testing")
    h = Harness(tmp_path, ctx)
    h.model()
    boto = s3_server.boto()
    boto.put_object(Bucket=s3_bucket, Key="data/part-1.csv", Body=b"1,1\n2,2\n")
    boto.put_object(Bucket=s3_bucket, Key="data/sub/part-2.csv", Body=b"5\n")
    h.create("tj-s3", f"s3://{s3_bucket}/data", f"s3://{s3_bucket}/results/")
    try:
        record = h.run("tj-s3")
    finally:
        ctx.store.close()
    assert record["TransformJobStatus"] == "Completed", record.get("FailureReason")
    listed = boto.list_objects_v2(Bucket=s3_bucket, Prefix="results/")["Contents"]
    assert sorted(o["Key"] for o in listed) == ["results/part-1.csv.out",
                                                "results/sub/part-2.csv.out"]
    body = boto.get_object(Bucket=s3_bucket, Key="results/part-1.csv.out")["Body"].read()
    assert body == b"2\n4\n"


def test_a_finished_job_is_left_alone(h: Harness) -> None:
    inputs = _data(h.tmp, {"a.csv": b"1\n"})
    h.create("tj-once", inputs.as_uri(), (h.tmp / "out").as_uri())
    h.run("tj-once")
    assert len(h.logged()) == 1
    record = h.run("tj-once")
    assert record["TransformJobStatus"] == "Completed" and len(h.logged()) == 1


def test_two_instances_share_the_requests(h: Harness) -> None:
    inputs = _data(h.tmp, {f"part-{i}.csv": b"%d\n%d\n" % (i, i) for i in range(8)})
    out = h.tmp / "out"
    h.create("tj-two", inputs.as_uri(), out.as_uri(),
             TransformResources={"InstanceCount": 2}, MaxConcurrentTransforms=2)
    record = h.run("tj-two")
    assert record["TransformJobStatus"] == "Completed", record.get("FailureReason")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        f"part-{i}.csv.out": b"%d\n%d\n" % (i, i) for i in range(8)}
    assert h.ctx.logs.hosts(KIND, "tj-two") == ["algo-1", "algo-2"]
    assert h.leftovers("tj-two") == []


def test_a_new_driver_starts_over_from_clean(h: Harness) -> None:
    """What a driver that died leaves (a container, a working folder) is cleared first."""
    inputs = _data(h.tmp, {"a.csv": b"1\n"})
    h.create("tj-again", inputs.as_uri(), (h.tmp / "out").as_uri())
    stale = h.tmp / "state" / "jobs" / KIND / "tj-again-dead0000"
    (stale / "instances").mkdir(parents=True)
    h.ctx.store.mutate(KIND, "tj-again", lambda rec, run: run.update(job_dir=str(stale)))
    spec = VariantSpec(name=KIND, image=str(h.project), instance_type="local", count=1,
                       weight=1.0)
    leftover = start_instance(h.ctx, owner_kind=KIND, owner_name="tj-again",
                              deployment="dead0000", spec=spec, model_dir=stale,
                              workdir=stale / "instances")
    assert h.leftovers("tj-again") == [leftover.container]
    record = h.run("tj-again")
    assert record["TransformJobStatus"] == "Completed", record.get("FailureReason")
    assert h.leftovers("tj-again") == [] and not stale.exists()


def test_containers_left_by_a_driver_that_died_after_the_outcome_are_swept(h: Harness) -> None:
    """The outcome is written before the containers stop; a plane that dies in between leaves
    them to the next plane's reconcile."""
    inputs = _data(h.tmp, {"a.csv": b"1\n"})
    h.create("tj-swept", inputs.as_uri(), (h.tmp / "out").as_uri())
    assert h.run("tj-swept")["TransformJobStatus"] == "Completed"
    assert h.ctx.store.get_job(KIND, "tj-swept").runner["cleaned"] is True
    # As if the driver had died between recording Completed and stopping its container.
    h.ctx.store.mutate(KIND, "tj-swept", lambda rec, run: run.update(cleaned=False))
    spec = VariantSpec(name=KIND, image=str(h.project), instance_type="local", count=1,
                       weight=1.0)
    workdir = h.tmp / "state" / "jobs" / KIND / "tj-swept-dead0000"
    leftover = start_instance(h.ctx, owner_kind=KIND, owner_name="tj-swept",
                              deployment="dead0000", spec=spec, model_dir=workdir,
                              workdir=workdir / "instances")
    assert h.leftovers("tj-swept") == [leftover.container]
    plane = ControlPlane(h.ctx.settings, h.ctx.runtime)
    try:
        assert h.leftovers("tj-swept") == []
        assert plane.ctx.store.get_job(KIND, "tj-swept").runner["cleaned"] is True
        assert plane.describe("transform", "tj-swept")["TransformJobStatus"] == "Completed"
    finally:
        plane.close()


# -- real containers -----------------------------------------------------------------------

SCALE_INFERENCE = """\
def model_fn(model_dir):
    return float(open(model_dir + "/scale.txt").read())


def transform_fn(model, data, content_type, accept):
    text = data.decode() if isinstance(data, bytes) else data
    rows = [row for row in text.split("\\n") if row]
    return "\\n".join("%g" % (model * sum(float(v) for v in row.split(","))) for row in rows), \\
        "text/csv"
"""


def _docker_harness(tmp: Path, docker_client: Any, scope_labels: dict[str, str]) -> Harness:
    loaded = Settings.load({"data_dir": str(tmp / "state"),
                            "endpoint_startup_timeout_seconds": 60}, environ={})
    ctx = Context.build(loaded, DockerRuntime(docker_client, labels=scope_labels))
    return Harness(tmp, ctx)


@pytest.mark.docker
def test_toolkit_image_transforms_ten_thousand_lines(
        tmp_path: Path, docker_client: Any, scope_labels: dict[str, str],
        images: dict[str, str]) -> None:
    h = _docker_harness(tmp_path, docker_client, scope_labels)
    tarball = model_tarball(tmp_path, "model",
                            {"scale.txt": "2", "code/inference.py": SCALE_INFERENCE})
    req = validate_model({"ModelName": "tk", "PrimaryContainer": {
        "Image": images["toolkit"], "ModelDataUrl": tarball.as_uri()}})
    h.ctx.store.insert_job("model", "tk", "arn:model/tk", "Created",
                           new_model(req, "arn:model/tk", records.now()), {})
    inputs = _data(tmp_path, {"rows.csv": b"".join(b"%d,1\n" % i for i in range(10_000))})
    out = tmp_path / "out"
    h.create("tj-toolkit", inputs.as_uri(), out.as_uri(), ModelName="tk")
    try:
        started = time.monotonic()
        record = h.run("tj-toolkit")
        elapsed = time.monotonic() - started
    finally:
        h.ctx.store.close()
    assert record["TransformJobStatus"] == "Completed", record.get("FailureReason")
    assert (out / "rows.csv.out").read_bytes() == b"".join(
        b"%d\n" % (2 * (i + 1)) for i in range(10_000))
    # Nothing in the request: the toolkit's /execution-parameters (MULTI_RECORD, 6 MB) rule.
    assert record["BatchStrategy"] == "MultiRecord" and record["MaxPayloadInMB"] == 6
    sources = h.ctx.store.get_job(KIND, "tj-toolkit").runner["parameter_sources"]
    assert sources == {"BatchStrategy": "container", "MaxPayloadInMB": "container",
                       "MaxConcurrentTransforms": "container"}
    assert h.leftovers("tj-toolkit") == []
    assert elapsed < 30, f"took {elapsed:.1f} s"


@pytest.mark.docker
def test_plain_image_error_fails_the_job(
        tmp_path: Path, docker_client: Any, scope_labels: dict[str, str],
        images: dict[str, str]) -> None:
    h = _docker_harness(tmp_path, docker_client, scope_labels)
    req = validate_model({"ModelName": "plain", "PrimaryContainer": {
        "Image": images["plain-serve"]}})
    h.ctx.store.insert_job("model", "plain", "arn:model/plain", "Created",
                           new_model(req, "arn:model/plain", records.now()), {})
    inputs = _data(tmp_path, {"ok.txt": b"hello", "zz.txt": b"fail"})
    out = tmp_path / "out"
    h.create("tj-plain", inputs.as_uri(), out.as_uri(), ModelName="plain",
             TransformInput={"SplitType": "None", "ContentType": "text/plain"},
             TransformOutput={"Accept": "application/json", "AssembleWith": "None"})
    try:
        record = h.run("tj-plain")
    finally:
        h.ctx.store.close()
    assert record["TransformJobStatus"] == "Failed"
    assert record["FailureReason"] == (
        "zz.txt: the model answered 400 to request 1 (the whole object): bad input: fail")
    reply = json.loads((out / "ok.txt.out").read_bytes())
    assert (reply["body"], reply["content_type"], reply["accept"]) == (
        "hello", "text/plain", "application/json")
    # No /execution-parameters: SageMaker's defaults.
    assert (record["BatchStrategy"], record["MaxPayloadInMB"],
            record["MaxConcurrentTransforms"]) == ("MultiRecord", 6, 1)
    assert h.leftovers("tj-plain") == []


def test_completed_only_once_the_containers_log_is_stored(h: Harness) -> None:
    """Lines printed while answering are all in the log when the status says Completed."""
    h.model("chatty", CHATTY="50000")
    inputs = _data(h.tmp, {"a.csv": b"1,2\n"})
    h.create("tj-chatty", inputs.as_uri(), (h.tmp / "out").as_uri(), ModelName="chatty")
    driver = threading.Thread(target=TransformJob(h.ctx, "tj-chatty").run, daemon=True)
    driver.start()
    try:
        deadline = time.monotonic() + 60
        while h.ctx.store.get_job(KIND, "tj-chatty").status not in records.TERMINAL_STATUSES:
            assert time.monotonic() < deadline, "the job never ended"
            time.sleep(0.01)
        lines = h.ctx.logs.tail_text(KIND, "tj-chatty", "algo-1", lines=60_000)
        assert h.ctx.store.get_job(KIND, "tj-chatty").status == records.COMPLETED
        start = lines.index("row 0")
        assert lines[start:] == [f"row {i}" for i in range(50000)] + ["scored"]
    finally:
        driver.join(60)
