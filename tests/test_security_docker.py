"""What a job's or an endpoint's container can reach and do, on a real Docker engine.

Each job and each endpoint has a network of its own: a container of one cannot open a
connection to another's (only the platform, which signs and meters every call, reaches an
endpoint). Every container runs with no-new-privileges, a pids limit and a reduced set of
capabilities; an image asks for more by label and gets them only when the operator allows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.contract.labels import CAPABILITIES_LABEL, JOB_NAME_LABEL
from shipyard.control import ControlPlane
from shipyard.runtimes.base import BASE_CAPABILITIES, DEFAULT_PIDS_LIMIT, Confinement
from tests.support.files import model_tarball
from tests.support.images import build_image
from tests.support.planes import Invoker, deploy, docker_plane, remove_endpoints

pytestmark = pytest.mark.docker

#: Capability numbers from linux/capability.h.
CAP_BITS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
            "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13,
            "SYS_CHROOT": 18, "SYS_PTRACE": 19, "MKNOD": 27, "AUDIT_WRITE": 29, "SETFCAP": 31}

PROBE = r'''
import json, os, socket, sys
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
found = {"no_new_privs": status["NoNewPrivs"].strip(), "cap_eff": int(status["CapEff"], 16)}
for path in ("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"):
    if os.path.exists(path):
        found["pids_max"] = open(path).read().strip()
reach = {}
for target in filter(None, os.environ.get("TARGETS", "").split(",")):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        reach[target] = "connected"
    except OSError as exc:
        reach[target] = type(exc).__name__
found["reach"] = reach
os.makedirs("/opt/ml/processing/output/probe", exist_ok=True)
json.dump(found, open("/opt/ml/processing/output/probe/probe.json", "w"))
print(json.dumps(found), flush=True)
'''


def _plane(tmp_path: Path, docker_client: Any, scope_labels: dict[str, str],
           confinement: Confinement | None = None) -> ControlPlane:
    return docker_plane(tmp_path, docker_client, scope_labels, confinement=confinement,
                        stop_grace_seconds=3, endpoint_startup_timeout_seconds=30)


@pytest.fixture
def plane(tmp_path: Path, docker_client: Any, scope_labels: dict[str, str]
          ) -> Iterator[ControlPlane]:
    cp = _plane(tmp_path, docker_client, scope_labels)
    yield cp
    remove_endpoints(cp, 60)
    cp.close()


def probe_job(name: str, image: str, tmp_path: Path) -> dict[str, Any]:
    """A CreateProcessingJob running PROBE, shipped as SDK processors ship code: an input at
    /opt/ml/processing/input/code (an entrypoint argument may hold no line break)."""
    code = tmp_path / f"{name}-code"
    code.mkdir(parents=True, exist_ok=True)
    (code / "probe.py").write_text(PROBE)
    return {
        "ProcessingJobName": name,
        "RoleArn": "arn:aws:iam::000000000000:role/shipyard",
        "AppSpecification": {"ImageUri": image, "ContainerEntrypoint": [
            "python3", "/opt/ml/processing/input/code/probe.py"]},
        "ProcessingInputs": [{"InputName": "code", "S3Input": {
            "S3Uri": code.as_uri(), "LocalPath": "/opt/ml/processing/input/code",
            "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.large",
                                                  "InstanceCount": 1, "VolumeSizeInGB": 5}},
    }


def probe(plane: ControlPlane, name: str, image: str, tmp_path: Path,
          targets: list[str] | None = None) -> dict[str, Any]:
    out = tmp_path / name
    plane.create("processing", {
        **probe_job(name, image, tmp_path),
        "Environment": {"TARGETS": ",".join(targets or [])},
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "probe", "S3Output": {
            "S3Uri": out.as_uri(), "LocalPath": "/opt/ml/processing/output/probe",
            "S3UploadMode": "EndOfJob"}}]},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
    })
    record = plane.wait("processing", name, timeout=60)
    assert record["ProcessingJobStatus"] == "Completed", record.get("FailureReason")
    return dict(json.loads((out / "probe.json").read_text()))


def _caps(mask: int) -> set[str]:
    return {name for name, bit in CAP_BITS.items() if mask >> bit & 1}


def test_a_job_container_is_confined(plane: ControlPlane, images: dict[str, str],
                                     tmp_path: Path) -> None:
    found = probe(plane, "confined", images["behaviours"], tmp_path)
    assert found["no_new_privs"] == "1"
    assert found["pids_max"] == str(DEFAULT_PIDS_LIMIT)
    caps = _caps(found["cap_eff"])
    assert caps == set(BASE_CAPABILITIES)
    assert not caps & {"NET_RAW", "MKNOD", "SYS_CHROOT", "SETFCAP", "AUDIT_WRITE"}
    # Nothing outside the known set either.
    assert found["cap_eff"] & ~sum(1 << b for b in CAP_BITS.values()) == 0


def test_no_job_reaches_an_endpoint_container_directly(
        plane: ControlPlane, images: dict[str, str], tmp_path: Path) -> None:
    url = model_tarball(tmp_path, "m", {"model.txt": "v1"}).as_uri()
    for name in ("ep-a", "ep-b"):
        record = deploy(plane, name, images["plain-serve"], url)
        assert record["EndpointStatus"] == "InService", record.get("FailureReason")
    runtime = plane.ctx.runtime
    addresses = {}
    for name in ("ep-a", "ep-b"):
        [container] = runtime.list({JOB_NAME_LABEL: name})
        state = runtime.inspect(container)
        assert state is not None and state.address
        addresses[name] = f"{state.address}:8080"
    found = probe(plane, "intruder", images["behaviours"], tmp_path, list(addresses.values()))
    assert all(outcome != "connected" for outcome in found["reach"].values()), found["reach"]
    # The platform itself still reaches both.
    invoke = Invoker(plane)
    try:
        for name in ("ep-a", "ep-b"):
            assert invoke(name, b"{}").body
    finally:
        invoke.close()


def test_an_endpoint_container_cannot_reach_another_endpoint(
        plane: ControlPlane, images: dict[str, str], tmp_path: Path) -> None:
    url = model_tarball(tmp_path, "m", {"model.txt": "v1"}).as_uri()
    deploy(plane, "ep-target", images["plain-serve"], url)
    deploy(plane, "ep-other", images["plain-serve"], url)
    runtime = plane.ctx.runtime
    [target] = runtime.list({JOB_NAME_LABEL: "ep-target"})
    [other] = runtime.list({JOB_NAME_LABEL: "ep-other"})
    target_state = runtime.inspect(target)
    assert target_state is not None
    client = plane.ctx.runtime._client  # type: ignore[attr-defined]
    result = client.containers.get(other).exec_run(
        ["python3", "-c", "import socket,sys\n"
         f"try:\n socket.create_connection(('{target_state.address}', 8080), timeout=2)\n"
         " print('connected')\nexcept OSError as e:\n print(type(e).__name__)"])
    assert b"connected" not in result.output, result.output


def test_each_job_and_endpoint_gets_its_own_network_removed_with_it(
        plane: ControlPlane, images: dict[str, str], tmp_path: Path, docker_client: Any
        ) -> None:
    url = model_tarball(tmp_path, "m", {"model.txt": "v1"}).as_uri()
    deploy(plane, "ep-net", images["plain-serve"], url)
    [container] = plane.ctx.runtime.list({JOB_NAME_LABEL: "ep-net"})
    networks = docker_client.containers.get(container).attrs["NetworkSettings"]["Networks"]
    assert list(networks) == ["shipyard-endpoint-ep-net"]
    plane.delete("endpoint", "ep-net")
    deadline = time.monotonic() + 60
    while plane.ctx.store.list_jobs("endpoint") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not docker_client.networks.list(names=["shipyard-endpoint-ep-net"])
    probe(plane, "own-net", images["behaviours"], tmp_path)
    # The job's network goes with its containers, just after the final status.
    deadline = time.monotonic() + 30
    while [n for n in docker_client.networks.list()
           if n.name.startswith("shipyard-processing-own-net-")]:
        assert time.monotonic() < deadline, "the job's network was not removed"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def ptrace_image(docker_client: Any, images: dict[str, str]) -> str:
    return build_image(docker_client, "asks-ptrace", {},
                       f'LABEL {CAPABILITIES_LABEL}="SYS_PTRACE"', with_toolkit=False)


def test_an_image_asking_for_a_capability_needs_the_operator(
        plane: ControlPlane, ptrace_image: str, tmp_path: Path, docker_client: Any,
        scope_labels: dict[str, str]) -> None:
    plane.create("processing", probe_job("asks", ptrace_image, tmp_path))
    record = plane.wait("processing", "asks", timeout=60)
    assert record["ProcessingJobStatus"] == "Failed"
    assert "SYS_PTRACE" in record["FailureReason"]
    assert "container_extra_capabilities" in record["FailureReason"]

    allowed = _plane(tmp_path / "allowed", docker_client, scope_labels,
                     Confinement(extra_capabilities=frozenset({"SYS_PTRACE"})))
    try:
        found = probe(allowed, "granted", ptrace_image, tmp_path)
        assert _caps(found["cap_eff"]) == {*BASE_CAPABILITIES, "SYS_PTRACE"}
    finally:
        allowed.close()
