"""Models, endpoint configs and endpoints on a real Docker engine, invoked through the plane.

Two images: the toolkit's own ``serve`` and a plain http.server program named ``serve`` (no
toolkit) whose behaviour the request body picks (``fail``, ``crash``, ``hang``, ``close``,
``big:N``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.contract.labels import JOB_NAME_LABEL
from shipyard.control import ControlPlane
from shipyard.control.endpoints.invocation import InvokeRequest
from shipyard.errors import InvokeValidationError, ModelError, ValidationError
from shipyard.runtimes.base import ContainerSpec
from tests.support.files import model_tarball
from tests.support.planes import Invoker, deploy, docker_plane, remove_endpoints

pytestmark = pytest.mark.docker

WAIT_S = 60


@pytest.fixture
def plane(tmp_path: Path, docker_client: Any, scope_labels: dict[str, str]
          ) -> Iterator[ControlPlane]:
    cp = docker_plane(tmp_path, docker_client, scope_labels,
                      endpoint_startup_timeout_seconds=30, invoke_timeout_seconds=3)
    yield cp
    remove_endpoints(cp, WAIT_S)
    cp.close()


@pytest.fixture
def invoke(plane: ControlPlane) -> Iterator[Invoker]:
    invoker = Invoker(plane)
    yield invoker
    invoker.close()


def containers_of(plane: ControlPlane, name: str) -> list[str]:
    return plane.ctx.runtime.list({JOB_NAME_LABEL: name})


def test_plain_serve_endpoint_two_instances(plane: ControlPlane, invoke: Invoker,
                                            images: dict[str, str], tmp_path: Path) -> None:
    url = model_tarball(tmp_path, "m", {"model.txt": "v1"}).as_uri()
    record = deploy(plane, "ep-plain", images["plain-serve"], url, count=2)
    assert record["EndpointStatus"] == "InService", record.get("FailureReason")
    variant = record["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == variant["DesiredInstanceCount"] == 2
    assert record["EndpointArn"].endswith(":endpoint/ep-plain")
    hosts = Counter()
    for i in range(40):
        result = invoke("ep-plain", f"row {i}".encode(), content_type="text/csv",
                        accept="application/json", custom_attributes="c=1")
        reply = json.loads(result.body)
        assert reply["model"] == "v1" and reply["body"] == f"row {i}"
        assert reply["content_type"] == "text/csv" and reply["accept"] == "application/json"
        assert reply["attributes"] == "c=1"
        assert result.variant == "AllTraffic" and result.custom_attributes == "seen=1"
        hosts[reply["host"]] += 1
    assert len(hosts) == 2, hosts  # both instances take traffic
    assert len(containers_of(plane, "ep-plain")) == 2
    # On a Linux engine the plane talks to each container at its bridge address, past the
    # engine's port proxy.
    runner = plane.ctx.store.get_job("endpoint", "ep-plain").runner
    assert all(i["host"] != "127.0.0.1" and i["port"] == 8080
               for i in runner["instances"]["AllTraffic"])
    streams = plane.ctx.logs.hosts("endpoint", "ep-plain")
    assert len(streams) == 2 and all(s.startswith("AllTraffic/") for s in streams)


def test_toolkit_endpoint_with_inference_code_in_the_tarball(
        plane: ControlPlane, invoke: Invoker, images: dict[str, str], tmp_path: Path) -> None:
    code = ("def model_fn(model_dir):\n"
            "    return open(model_dir + '/weights.txt').read().strip()\n"
            "def predict_fn(data, model):\n"
            "    return {'weights': model, 'sum': sum(data['instances'])}\n")
    url = model_tarball(tmp_path, "tk", {"weights.txt": "w-7", "code/inference.py": code}
                        ).as_uri()
    record = deploy(plane, "ep-toolkit", images["toolkit"], url)
    assert record["EndpointStatus"] == "InService", record.get("FailureReason")
    reply = invoke.json("ep-toolkit", b'{"instances": [1, 2, 3]}',
                        content_type="application/json", accept="application/json")
    assert reply == {"weights": "w-7", "sum": 6}
    with pytest.raises(ModelError) as err:
        invoke("ep-toolkit", b"{not json", content_type="application/json")
    assert err.value.original_status_code == 400


def test_container_that_never_passes_ping_fails_the_endpoint(
        tmp_path: Path, docker_client: Any, scope_labels: dict[str, str],
        images: dict[str, str]) -> None:
    plane = docker_plane(tmp_path, docker_client, scope_labels,
                       endpoint_startup_timeout_seconds=2)
    try:
        record = deploy(plane, "ep-never", images["plain-serve"], None,
                        env={"MODE": "never-ready"})
        assert record["EndpointStatus"] == "Failed"
        assert "did not pass the ping health check within 2 seconds" in record["FailureReason"]
        assert containers_of(plane, "ep-never") == []
        with pytest.raises(ValidationError, match="in status Failed"):
            plane.update_endpoint({"EndpointName": "ep-never",
                                   "EndpointConfigName": "ep-never-config"})
        plane.delete("endpoint", "ep-never")
        deadline = time.monotonic() + WAIT_S
        while plane.ctx.store.list_jobs("endpoint") and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(ValidationError, match="Could not find endpoint"):
            plane.describe("endpoint", "ep-never")
    finally:
        plane.close()


def test_container_that_exits_fails_fast_with_its_log(
        plane: ControlPlane, images: dict[str, str]) -> None:
    started = time.monotonic()
    record = deploy(plane, "ep-exit", images["plain-serve"], None, env={"MODE": "exit"})
    assert time.monotonic() - started < 20
    assert record["EndpointStatus"] == "Failed"
    assert "exit code 2" in record["FailureReason"]
    assert "MODE=exit" in record["FailureReason"]


def test_unsafe_model_tarball_is_refused(plane: ControlPlane, images: dict[str, str],
                                         tmp_path: Path) -> None:
    url = model_tarball(tmp_path, "evil", {"../escape.txt": "x"}).as_uri()
    record = deploy(plane, "ep-evil", images["plain-serve"], url)
    assert record["EndpointStatus"] == "Failed"
    assert "escapes the destination" in record["FailureReason"]
    assert not (tmp_path / "state" / "endpoints" / "escape.txt").exists()
    assert containers_of(plane, "ep-evil") == []


def test_container_errors_crashes_and_hangs(plane: ControlPlane, invoke: Invoker,
                                            images: dict[str, str]) -> None:
    record = deploy(plane, "ep-err", images["plain-serve"], None)
    assert record["EndpointStatus"] == "InService", record.get("FailureReason")
    with pytest.raises(ModelError) as err:
        invoke("ep-err", b"fail")
    assert err.value.original_status_code == 400
    assert err.value.original_message == "bad input: fail"
    assert 'Received client error (400) from primary with message "bad input: fail"' in str(
        err.value)
    assert err.value.log_stream_arn.endswith("log-group:/aws/sagemaker/Endpoints/ep-err")

    started = time.monotonic()
    with pytest.raises(ModelError, match="timed out"):
        invoke("ep-err", b"hang")
    assert time.monotonic() - started < 10
    assert invoke.json("ep-err", b"still fine")["body"] == "still fine"

    with pytest.raises(ModelError) as err:
        invoke("ep-err", b"crash")
    assert err.value.original_status_code == 0
    # The monitor replaces the dead instance; the endpoint answers again.
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            assert invoke.json("ep-err", b"after")["body"] == "after"
            break
        except Exception:
            assert time.monotonic() < deadline, "the crashed instance was never replaced"
            time.sleep(0.2)
    assert plane.describe("endpoint", "ep-err")["ProductionVariants"][0][
        "CurrentInstanceCount"] == 1


def test_a_killed_instance_costs_no_requests(plane: ControlPlane, invoke: Invoker,
                                            images: dict[str, str], docker_client: Any) -> None:
    deploy(plane, "ep-kill", images["plain-serve"], None, count=2)
    hosts = {invoke.json("ep-kill", f"warm {i}".encode())["host"] for i in range(20)}
    assert len(hosts) == 2  # both instances hold pooled connections now
    victim = containers_of(plane, "ep-kill")[0]
    docker_client.containers.get(victim).kill()

    failures: list[str] = []

    def burst(count: int) -> None:
        invoker = Invoker(plane)
        try:
            for i in range(count):
                try:
                    invoker.json("ep-kill", f"burst {i}".encode())
                except Exception as exc:  # any failure is what this test is about
                    failures.append(repr(exc))
        finally:
            invoker.close()

    workers = [threading.Thread(target=burst, args=(10,)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for i in range(30):
        try:
            assert invoke.json("ep-kill", f"after {i}".encode())["body"] == f"after {i}"
        except Exception as exc:
            failures.append(repr(exc))
    for worker in workers:
        worker.join()

    async def streamed() -> bytes:
        stream = await plane.invoke_stream(InvokeRequest(endpoint="ep-kill", body=b"s"))
        return b"".join([chunk async for chunk in stream.chunks])

    for _ in range(5):
        assert json.loads(invoke.loop.run_until_complete(streamed()))["body"] == "s"
    assert failures == []


def test_an_instance_that_refuses_connections_costs_no_requests(
        plane: ControlPlane, invoke: Invoker, images: dict[str, str], docker_client: Any
) -> None:
    # The container keeps running, so the monitor never replaces it: routing alone must keep
    # requests away from it.
    deploy(plane, "ep-deaf", images["plain-serve"], None, count=2, env={"MODE": "child"})
    deaf = docker_client.containers.get(containers_of(plane, "ep-deaf")[0])
    assert deaf.exec_run(["sh", "-c", "kill -9 $(cat /tmp/serve.pid)"]).exit_code == 0
    failures: list[str] = []
    hosts: Counter[str] = Counter()

    def burst(count: int) -> None:
        invoker = Invoker(plane)
        try:
            for _ in range(count):
                try:
                    hosts[invoker.json("ep-deaf")["host"]] += 1
                except Exception as exc:  # any failure is what this test is about
                    failures.append(repr(exc))
        finally:
            invoker.close()

    burst(30)
    workers = [threading.Thread(target=burst, args=(20,)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    assert len(hosts) == 1 and deaf.attrs["Config"]["Hostname"] not in hosts


def test_a_request_that_reached_the_model_is_never_sent_twice(
        plane: ControlPlane, invoke: Invoker, images: dict[str, str], docker_client: Any
) -> None:
    deploy(plane, "ep-once", images["plain-serve"], None, count=2)
    for i in range(10):
        invoke("ep-once", f"warm {i}".encode())  # the hang-up then comes on a pooled connection
    with pytest.raises(ModelError) as err:
        invoke("ep-once", b"close 1")
    assert err.value.original_status_code == 0

    async def streamed() -> None:
        await plane.invoke_stream(InvokeRequest(endpoint="ep-once", body=b"close 2"))

    with pytest.raises(ModelError):
        invoke.loop.run_until_complete(streamed())
    logs = b"".join(docker_client.containers.get(c).logs()
                    for c in containers_of(plane, "ep-once")).decode()
    assert logs.count("took 'close 1'") == 1, logs
    assert logs.count("took 'close 2'") == 1, logs
    assert invoke.json("ep-once", b"fine")["body"] == "fine"


def test_response_over_the_limit_is_a_model_error(
        tmp_path: Path, docker_client: Any, scope_labels: dict[str, str],
        images: dict[str, str]) -> None:
    plane = docker_plane(tmp_path, docker_client, scope_labels, invoke_max_payload_bytes=1000)
    invoker = Invoker(plane)
    try:
        deploy(plane, "ep-big", images["plain-serve"], None)
        assert len(invoker("ep-big", b"big:1000").body) == 1000
        with pytest.raises(ModelError, match="over the 1000 byte limit"):
            invoker("ep-big", b"big:1001")
        plane.delete("endpoint", "ep-big")
        deadline = time.monotonic() + WAIT_S
        while plane.ctx.store.list_jobs("endpoint") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        invoker.close()
        plane.close()


def test_weighted_variants_and_target_variant(plane: ControlPlane, invoke: Invoker,
                                              images: dict[str, str]) -> None:
    for tag in ("a", "b"):
        plane.create("model", {"ModelName": f"wv-{tag}", "PrimaryContainer": {
            "Image": images["plain-serve"], "Environment": {"VARIANT_TAG": tag}}})
    plane.create("endpoint-config", {"EndpointConfigName": "wv-config", "ProductionVariants": [
        {"VariantName": "A", "ModelName": "wv-a", "InitialVariantWeight": 1},
        {"VariantName": "B", "ModelName": "wv-b", "InitialVariantWeight": 3}]})
    plane.create("endpoint", {"EndpointName": "ep-wv", "EndpointConfigName": "wv-config"})
    assert plane.wait_endpoint("ep-wv", timeout=WAIT_S)["EndpointStatus"] == "InService"
    seen = Counter(invoke("ep-wv", b"x").variant for _ in range(400))
    assert 0.15 < seen["A"] / 400 < 0.35, seen  # 1:3 -> 25 %
    assert {invoke.json("ep-wv", b"x", target_variant="A")["variant"] for _ in range(20)} == {"a"}
    with pytest.raises(InvokeValidationError, match="not part of endpoint"):
        invoke("ep-wv", b"x", target_variant="C")


def test_update_endpoint_blue_green_under_load(plane: ControlPlane, images: dict[str, str],
                                               tmp_path: Path) -> None:
    v1 = model_tarball(tmp_path, "v1", {"model.txt": "v1"}).as_uri()
    v2 = model_tarball(tmp_path, "v2", {"model.txt": "v2"}).as_uri()
    deploy(plane, "ep-bg", images["plain-serve"], v1, count=2)
    old = set(containers_of(plane, "ep-bg"))
    plane.create("model", {"ModelName": "ep-bg-model-2", "PrimaryContainer": {
        "Image": images["plain-serve"], "ModelDataUrl": v2}})
    plane.create("endpoint-config", {"EndpointConfigName": "ep-bg-config-2", "ProductionVariants": [
        {"VariantName": "AllTraffic", "ModelName": "ep-bg-model-2",
         "InitialInstanceCount": 2}]})

    answers: Counter[str] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        invoker = Invoker(plane)
        try:
            while not stop.is_set():
                try:
                    answers[invoker.json("ep-bg", b"q")["model"]] += 1
                except Exception as exc:  # any failure is what this test is about
                    failures.append(repr(exc))
        finally:
            invoker.close()

    workers = [threading.Thread(target=loop) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.3)
        plane.update_endpoint({"EndpointName": "ep-bg", "EndpointConfigName": "ep-bg-config-2"})
        assert plane.describe("endpoint", "ep-bg")["EndpointStatus"] == "Updating"
        record = plane.wait_endpoint("ep-bg", timeout=WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while old & set(containers_of(plane, "ep-bg")) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert record["EndpointStatus"] == "InService" and "FailureReason" not in record
    assert record["EndpointConfigName"] == "ep-bg-config-2"
    assert failures == []
    assert answers["v1"] > 0 and answers["v2"] > 0, answers
    assert not old & set(containers_of(plane, "ep-bg"))  # the old fleet is gone
    assert len(containers_of(plane, "ep-bg")) == 2


def test_failed_update_keeps_the_old_fleet(
        tmp_path: Path, docker_client: Any, scope_labels: dict[str, str],
        images: dict[str, str]) -> None:
    plane = docker_plane(tmp_path, docker_client, scope_labels)
    invoker = Invoker(plane)
    try:
        deploy(plane, "ep-rb", images["plain-serve"], None)
        plane.create("model", {"ModelName": "rb-broken", "PrimaryContainer": {
            "Image": images["plain-serve"], "Environment": {"MODE": "exit"}}})
        plane.create("endpoint-config", {"EndpointConfigName": "rb-broken", "ProductionVariants": [
            {"VariantName": "AllTraffic", "ModelName": "rb-broken"}]})
        plane.update_endpoint({"EndpointName": "ep-rb", "EndpointConfigName": "rb-broken"})
        record = plane.wait_endpoint("ep-rb", timeout=WAIT_S)
        assert record["EndpointStatus"] == "InService"
        assert record["EndpointConfigName"] == "ep-rb-config"
        assert "exit code 2" in record["FailureReason"]
        assert invoker.json("ep-rb", b"ok")["body"] == "ok"
        assert len(containers_of(plane, "ep-rb")) == 1
        plane.delete("endpoint", "ep-rb")
        deadline = time.monotonic() + WAIT_S
        while plane.ctx.store.list_jobs("endpoint") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert containers_of(plane, "ep-rb") == []
    finally:
        invoker.close()
        plane.close()


def test_endpoints_survive_a_control_plane_restart(
        tmp_path: Path, docker_client: Any, scope_labels: dict[str, str],
        images: dict[str, str]) -> None:
    first = docker_plane(tmp_path, docker_client, scope_labels)
    deploy(first, "ep-keep", images["plain-serve"], None, count=2)
    before = sorted(containers_of(first, "ep-keep"))
    first.close()
    # One instance dies while no plane watches, and a fleet the old plane was retiring is
    # still there.
    docker_client.containers.get(before[0]).kill()
    stray = "shipyard-endpoint-ep-keep-old-AllTraffic-stray"
    first.ctx.runtime.start(ContainerSpec(
        name=stray, image=images["plain-serve"], command=["serve"],
        labels={"org.shipyard.job-kind": "endpoint", JOB_NAME_LABEL: "ep-keep",
                "org.shipyard.job-uid": "old"}))
    second = docker_plane(tmp_path, docker_client, scope_labels)
    invoker = Invoker(second)
    try:
        runner = second.ctx.store.get_job("endpoint", "ep-keep").runner
        assert runner["reconciled"]["reattached"] == 1
        assert runner["reconciled"]["restarted"] == 1
        assert invoker.json("ep-keep", b"after restart")["body"] == "after restart"
        deadline = time.monotonic() + WAIT_S
        while second.describe("endpoint", "ep-keep")["ProductionVariants"][0][
                "CurrentInstanceCount"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        while stray in containers_of(second, "ep-keep"):
            assert time.monotonic() < deadline, "the stray container was never retired"
            time.sleep(0.1)
        after = containers_of(second, "ep-keep")
        assert before[1] in after and before[0] not in after and len(after) == 2
        second.delete("endpoint", "ep-keep")
        while second.ctx.store.list_jobs("endpoint") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        invoker.close()
        second.close()


def test_model_and_config_errors(plane: ControlPlane, images: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match='Could not find model "arn:aws:sagemaker:'
                       'us-east-1:000000000000:model/nope"'):
        plane.describe("model", "nope")
    with pytest.raises(ValidationError, match="Could not find model"):
        plane.create("endpoint-config", {"EndpointConfigName": "c1", "ProductionVariants": [
            {"VariantName": "AllTraffic", "ModelName": "nope"}]})
    plane.create("model", {"ModelName": "dup", "PrimaryContainer": {"Image": images["toolkit"]}})
    with pytest.raises(ValidationError, match="Cannot create already existing model"):
        plane.create("model", {"ModelName": "dup", "PrimaryContainer": {"Image": "x"}})
    with pytest.raises(ValidationError, match="Could not find endpoint configuration"):
        plane.create("endpoint", {"EndpointName": "e1", "EndpointConfigName": "missing"})
    with pytest.raises(ValidationError, match="repeated"):
        plane.create("endpoint-config", {"EndpointConfigName": "c2", "ProductionVariants": [
            {"VariantName": "A", "ModelName": "dup"}, {"VariantName": "A", "ModelName": "dup"}]})
    invoker = Invoker(plane)
    try:
        with pytest.raises(InvokeValidationError,
                           match="Endpoint missing of account 000000000000 not found."):
            invoker("missing", b"x")
    finally:
        invoker.close()


def test_multi_model_endpoint_loads_target_models_on_demand(
        plane: ControlPlane, invoke: Invoker, images: dict[str, str], tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    for name in ("m1", "m2"):
        code = (f"def model_fn(model_dir):\n    return {name!r}\n"
                "def predict_fn(data, model):\n    return {'model': model, 'data': data}\n")
        tarball = model_tarball(tmp_path, name, {"code/inference.py": code})
        tarball.rename(models_dir / f"{name}.tar.gz")
    plane.create("model", {"ModelName": "mme", "PrimaryContainer": {
        "Image": images["toolkit"], "Mode": "MultiModel", "ModelDataUrl": models_dir.as_uri()}})
    plane.create("endpoint-config", {"EndpointConfigName": "mme", "ProductionVariants": [
        {"VariantName": "AllTraffic", "ModelName": "mme"}]})
    plane.create("endpoint", {"EndpointName": "ep-mme", "EndpointConfigName": "mme"})
    record = plane.wait_endpoint("ep-mme", timeout=WAIT_S)
    assert record["EndpointStatus"] == "InService", record.get("FailureReason")
    for name in ("m1", "m2", "m1"):
        reply = invoke.json("ep-mme", b"[1]", content_type="application/json",
                            target_model=f"{name}.tar.gz")
        assert reply == {"model": name, "data": [1]}
    with pytest.raises(InvokeValidationError, match="TargetModel"):
        invoke("ep-mme", b"[1]", content_type="application/json")
    with pytest.raises(InvokeValidationError, match="Could not find model data"):
        invoke("ep-mme", b"[1]", content_type="application/json", target_model="m3.tar.gz")
    with pytest.raises(InvokeValidationError, match="not a valid model name"):
        invoke("ep-mme", b"[1]", target_model="../m1.tar.gz")


def test_delete_while_creating_leaves_nothing(plane: ControlPlane,
                                              images: dict[str, str]) -> None:
    deploy(plane, "ep-gone", images["plain-serve"], None, env={"MODE": "never-ready"},
           count=2, wait=False)
    assert plane.describe("endpoint", "ep-gone")["EndpointStatus"] == "Creating"
    plane.delete("endpoint", "ep-gone")
    deadline = time.monotonic() + WAIT_S
    while plane.ctx.store.list_jobs("endpoint") or containers_of(plane, "ep-gone"):
        assert time.monotonic() < deadline, "the endpoint or its containers outlived delete"
        time.sleep(0.1)
    time.sleep(1)  # nothing comes back: no late deployment, no replacement
    assert containers_of(plane, "ep-gone") == []
    with pytest.raises(ValidationError, match="Could not find endpoint"):
        plane.describe("endpoint", "ep-gone")
