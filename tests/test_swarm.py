"""The swarm runtime on a real four-worker Docker Swarm (tests/support/swarm.py): jobs whose
hosts run on distinct nodes and talk, sharded processing, nodes that stage their own data
through the server's own S3 store (nothing shared), an endpoint that rides out the loss of a
node, and the errors a cluster adds (paths the nodes do not share, a lost node)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.contract.labels import SCOPE_LABEL
from shipyard.control import ControlPlane
from shipyard.control.context import runtime_for
from shipyard.runtimes.swarm import SwarmRuntime
from shipyard.settings import Settings
from tests.support import planes
from tests.support.cli import run, shipyard_env
from tests.support.files import tar_files, write_tree
from tests.support.images import build_image
from tests.support.jobs import training_request
from tests.support.net import unused_port
from tests.support.polling import until
from tests.support.processes import terminate
from tests.support.s3server import DEPOT_KEY, depot_boto, seaweed
from tests.support.swarm import (
    FIXTURE_DIR,
    SCRIPT,
    WORKERS,
    Swarm,
    swarm_plane,
)
from tests.support.swarm import swarm as swarm  # noqa: PLC0414 - the module's fixture
from tests.support.workloads import ALL_REDUCE, STAGED, run_staged_jobs

SHARDS = '''import os, pathlib, json
inputs = sorted(p.name for p in pathlib.Path("/opt/ml/processing/input/rows").iterdir())
host = json.load(open("/opt/ml/config/resourceconfig.json"))["current_host"]
out = pathlib.Path("/opt/ml/processing/output/report") / f"{host}.json"
out.write_text(json.dumps({"host": host, "files": inputs}))
print(host, inputs, flush=True)
'''


@pytest.fixture(scope="module")
def cluster_images(docker_client: Any, base_image: str) -> dict[str, str]:
    return {
        "all-reduce": build_image(
            docker_client, "all-reduce", {"a.py": ALL_REDUCE},
            "COPY a.py /opt/program/\nENTRYPOINT [\"python3\", \"/opt/program/a.py\"]",
            with_toolkit=False),
        "shards": build_image(
            docker_client, "shards", {"s.py": SHARDS}, "COPY s.py /opt/program/",
            with_toolkit=False),
        "staged": build_image(
            docker_client, "staged", {"t.py": STAGED},
            "COPY t.py /opt/program/\nENTRYPOINT [\"python3\", \"/opt/program/t.py\"]",
            with_toolkit=False),
    }


@pytest.fixture
def plane(tmp_path: Path, swarm: Swarm, scope_labels: dict[str, str]) -> Iterator[ControlPlane]:
    cp = swarm_plane(tmp_path, swarm, scope_labels, remove_containers=False)
    yield cp
    planes.remove_endpoints(cp)
    for name in cp.ctx.runtime.list(scope_labels):
        cp.ctx.runtime.remove(name)
    cp.close()


def runtime_of(plane: ControlPlane) -> SwarmRuntime:
    runtime = plane.ctx.runtime
    assert isinstance(runtime, SwarmRuntime)
    return runtime


def nodes_of(plane: ControlPlane, name: str) -> dict[str, str]:
    """Host (or instance) -> the node it ran on, for the containers of job ``name``."""
    runtime = runtime_of(plane)
    found = {}
    for container in runtime.list({"org.shipyard.job-name": name}):
        state = runtime.inspect(container)
        assert state is not None
        found[container.rsplit("-", 1)[-1] if "algo" in container else container] = state.node
    return found


def test_four_hosts_all_reduce_on_four_nodes(plane: ControlPlane, cluster_images: dict[str, str],
                                             tmp_path: Path) -> None:
    plane.create("training", training_request(
        "allreduce", tmp_path, image=cluster_images["all-reduce"], instance_type="local",
        instance_count=4, max_runtime_s=600))
    record = plane.wait("training", "allreduce", timeout=180)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    # The model archive is algo-1's, as on SageMaker: 1 + 4 + 9 + 16.
    files = tar_files(tmp_path / "out" / "allreduce" / "output" / "model.tar.gz")
    assert json.loads(files["result.json"]) == {"me": "algo-1", "sum": 30}
    placed = nodes_of(plane, "allreduce")
    assert sorted(placed) == ["1", "2", "3", "4"]
    assert len(set(placed.values())) == 4, placed
    lines = [e.message for e in plane.follow_logs("training", "allreduce", follow=False)]
    assert sorted(line for line in lines if "sum=" in line) == [
        f"algo-{i}: sum=30" for i in range(1, 5)]


def test_paths_the_nodes_do_not_share_are_refused(plane: ControlPlane, images: dict[str, str],
                                                  tmp_path: Path) -> None:
    elsewhere = Path(tempfile.mkdtemp(prefix="shipyard-not-shared-", dir=Path.home()))
    try:
        write_tree(elsewhere, {"part-0.csv": "1,2\n"})
        plane.create("training", training_request(
            "unshared", tmp_path, image=images["behaviours"], instance_type="local",
            data=elsewhere, max_runtime_s=600))
        record = plane.wait("training", "unshared", timeout=120)
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
    assert record["TrainingJobStatus"] == "Failed"
    assert "swarm_shared_paths" in record["FailureReason"], record["FailureReason"]


@pytest.fixture(scope="module")
def depot_store(swarm: Swarm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The server's own S3 store, listening where every node reaches it."""
    with seaweed(tmp_path_factory.mktemp("depot") / "s3", DEPOT_KEY, swarm.address) as store:
        yield store


@pytest.fixture
def depot_plane(tmp_path: Path, swarm: Swarm, scope_labels: dict[str, str],
                depot_store: Any) -> Iterator[ControlPlane]:
    """A plane whose nodes share no path with it: data and folders go through the depot."""
    settings = Settings.load({
        "data_dir": str(tmp_path / "state"), "runtime": "swarm", "stop_grace_seconds": 3,
        "scope": scope_labels[SCOPE_LABEL],
        "swarm_node_engines": ",".join(f"{h}={u}" for h, u in swarm.engines.items()),
        "s3_endpoint_url": depot_store.url, "s3_access_key_id": DEPOT_KEY[0],
        "s3_secret_access_key": DEPOT_KEY[1], "swarm_depot": "s3://shipyard-depot/tests"},
        environ={})
    cp = ControlPlane(settings, runtime_for(settings))
    yield cp
    for name in cp.ctx.runtime.list(scope_labels):
        cp.ctx.runtime.remove(name)
    cp.close()


def test_two_hosts_process_their_own_shards(depot_plane: ControlPlane, depot_store: Any,
                                            cluster_images: dict[str, str]) -> None:
    boto = depot_boto(depot_store)
    s3_bucket = "processing"
    boto.create_bucket(Bucket=s3_bucket)
    for i in range(4):
        boto.put_object(Bucket=s3_bucket, Key=f"rows/part-{i}.csv", Body=f"{i}\n".encode())
    depot_plane.create("processing", {
        "ProcessingJobName": "shards", "RoleArn": "arn:aws:iam::000000000000:role/shipyard",
        "AppSpecification": {"ImageUri": cluster_images["shards"],
                             "ContainerEntrypoint": ["python3", "/opt/program/s.py"]},
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "local", "InstanceCount": 2,
                                                  "VolumeSizeInGB": 1}},
        "ProcessingInputs": [{"InputName": "rows", "S3Input": {
            "S3Uri": f"s3://{s3_bucket}/rows/", "LocalPath": "/opt/ml/processing/input/rows",
            "S3DataType": "S3Prefix", "S3InputMode": "File",
            "S3DataDistributionType": "ShardedByS3Key"}}],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "report", "S3Output": {
            "S3Uri": f"s3://{s3_bucket}/report", "LocalPath": "/opt/ml/processing/output/report",
            "S3UploadMode": "EndOfJob"}}]},
    })
    record = depot_plane.wait("processing", "shards", timeout=180)
    assert record["ProcessingJobStatus"] == "Completed", record.get("FailureReason")
    reports = {host: json.loads(boto.get_object(Bucket=s3_bucket, Key=f"report/{host}.json")[
        "Body"].read()) for host in ("algo-1", "algo-2")}
    files = [reports[h]["files"] for h in ("algo-1", "algo-2")]
    # Each host got its own half of the objects, none twice.
    assert sorted(files[0] + files[1]) == [f"part-{i}.csv" for i in range(4)]
    assert files[0] and files[1] and not set(files[0]) & set(files[1])


def test_nodes_stage_their_own_data_when_nothing_is_shared(
        depot_plane: ControlPlane, depot_store: Any, swarm: Swarm,
        cluster_images: dict[str, str], scope_labels: dict[str, str]) -> None:
    boto = depot_boto(depot_store)
    run_staged_jobs(depot_plane, boto, cluster_images["staged"])

    # Nothing is left behind: no volume on any node, nothing in the depot.
    import docker

    def leftovers() -> list[str]:
        found = []
        for url in swarm.engines.values():
            client = docker.APIClient(base_url=url)
            try:
                found += [v["Name"] for v in client.volumes(filters={
                    "label": f"{SCOPE_LABEL}={scope_labels[SCOPE_LABEL]}"}).get("Volumes") or []]
            finally:
                client.close()
        listed = boto.list_objects_v2(Bucket="shipyard-depot", Prefix="tests/")
        return found + [o["Key"] for o in listed.get("Contents") or []]

    until("no volume or depot object left", lambda: not leftovers(), timeout=30)


@pytest.fixture(scope="module")
def node_registry(swarm: Swarm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Debian's docker-registry where the nodes reach it (the bridge) and where the main
    engine may push over plain HTTP (the loopback); its port."""
    binary = shutil.which("docker-registry")
    if not binary:
        message = "docker-registry is needed: run scripts/setup.sh --test"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("node-registry")
    port = unused_port()
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 0.0.0.0:{port}\n")
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log,
                                stderr=subprocess.STDOUT)

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
                return True
        except (urllib.error.URLError, OSError):
            return proc.poll() is not None  # ended: said below
    try:
        until("the registry answers", answers, timeout=20)
        assert proc.poll() is None, (root / "registry.log").read_text()
        yield port
    finally:
        terminate(proc)


def test_nodes_pull_images_from_the_registry(
        swarm: Swarm, node_registry: int, docker_client: Any, scope_labels: dict[str, str],
        tmp_path: Path) -> None:
    """No node engine known to the platform: the image is pushed to the registry and the
    node pulls it from there, pinned by digest (no node had it: it is new)."""
    marker = uuid.uuid4().hex
    image = build_image(docker_client, f"pulled-{marker[:8]}",
                        {"p.py": f"print('pulled {marker}', flush=True)\n"},
                        "COPY p.py /opt/program/\nENTRYPOINT [\"python3\", \"/opt/program/p.py\"]",
                        with_toolkit=False)
    registry = f"{swarm.address}:{node_registry}"
    runtime = SwarmRuntime(labels=scope_labels, registry=registry,
                           registry_push=f"127.0.0.1:{node_registry}", shared_paths=(tmp_path,),
                           stop_grace_seconds=3)
    settings = Settings.load({"data_dir": str(tmp_path / "state"), "runtime": "swarm",
                              "stop_grace_seconds": 3}, environ={})
    cp = ControlPlane(settings, runtime)
    try:
        cp.create("training", training_request("pulled", tmp_path, image=image,
                                               instance_type="local", max_runtime_s=600))
        record = cp.wait("training", "pulled", timeout=180)
        assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
        lines = [e.message for e in cp.follow_logs("training", "pulled", follow=False)]
        assert f"pulled {marker}" in lines
    finally:
        cp.close()
        with contextlib.suppress(Exception):
            docker_client.images.remove(
                f"127.0.0.1:{node_registry}/{image.split(':')[0]}:{image.split(':')[1]}")
    import docker

    pulled = []
    for url in swarm.engines.values():
        client = docker.APIClient(base_url=url)
        try:
            pulled += [d for i in client.images() for d in i.get("RepoDigests") or []
                       if d.startswith(f"{registry}/{image.split(':')[0]}@")]
        finally:
            client.close()
    assert pulled, "no node holds the image as pulled from the registry"


def test_work_no_node_has_room_for_waits_as_starting(swarm: Swarm, images: dict[str, str],
                                                     scope_labels: dict[str, str],
                                                     tmp_path: Path) -> None:
    plane = swarm_plane(tmp_path, swarm, scope_labels)
    try:
        _fill_then_wait(plane, images, tmp_path)
    finally:
        plane.close()


def _fill_then_wait(plane: ControlPlane, images: dict[str, str], tmp_path: Path) -> None:
    # An ml.m5.4xlarge (64 GiB) reserves the whole of a node here (its memory, capped at the
    # largest node's): four hosts fill the swarm, and the next job waits, Starting.
    plane.create("training", training_request(
        "fill", tmp_path / "fill", image=images["behaviours"], instance_type="ml.m5.4xlarge",
        instance_count=WORKERS, max_runtime_s=600,
        Environment={"MODE": "sleep", "SLEEP": "8"}))
    runtime = runtime_of(plane)
    until("the swarm full", lambda: len([
        s for c in runtime.list({"org.shipyard.job-name": "fill"})
        if (s := runtime.inspect(c)) is not None and s.running and not s.waiting]) == WORKERS,
        120, poll=0.5)
    plane.create("training", training_request(
        "next", tmp_path / "next", image=images["behaviours"], instance_type="ml.m5.4xlarge",
        max_runtime_s=600))
    waiting = until("the next job waiting for room", lambda: (
        (r := plane.describe("training", "next")).get("SecondaryStatus") == "Starting"
        and "insufficient resources" in r.get("StatusMessage", "") and r), 60, poll=0.5)
    assert "algo-1" in waiting["StatusMessage"]
    # Behind it in line, a job of two hosts.
    plane.create("training", training_request(
        "after", tmp_path / "after", image=images["behaviours"], instance_type="ml.m5.4xlarge",
        instance_count=2, max_runtime_s=600))
    until("the job behind waiting too", lambda: "insufficient resources" in plane.describe(
        "training", "after").get("StatusMessage", ""), 60, poll=0.5)
    # Stopping work that waits for room is immediate: nothing of it ever ran.
    plane.stop("training", "next")
    record = plane.wait("training", "next", timeout=30)
    assert record["TrainingJobStatus"] == "Stopped"
    record = plane.wait("training", "fill", timeout=180)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    # Room freed: the job behind starts (on the nodes the first left) and completes.
    record = plane.wait("training", "after", timeout=180)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")


def test_a_worker_is_not_a_manager(swarm: Swarm) -> None:
    from shipyard.errors import RuntimeUnavailable

    runtime = SwarmRuntime(swarm.engine("shipyard-swn1"))
    try:
        with pytest.raises(RuntimeUnavailable, match="not a swarm manager"):
            runtime.ping()
    finally:
        runtime.close()


def test_stop_reaches_a_host_on_another_node(plane: ControlPlane, images: dict[str, str],
                                             tmp_path: Path) -> None:
    plane.create("training", training_request(
        "stop", tmp_path, image=images["toolkit-behaviours"], instance_type="local",
        instance_count=2, max_runtime_s=600, Environment={"MODE": "checkpoint-on-sigterm"}))
    until("both hosts ready", lambda: sum(
        e.message == "ready" for e in plane.follow_logs("training", "stop", follow=False)) == 2,
        120, poll=0.5)
    plane.stop("training", "stop")
    record = plane.wait("training", "stop", timeout=60)
    assert record["TrainingJobStatus"] == "Stopped"
    files = tar_files(tmp_path / "out" / "stop" / "output" / "model.tar.gz")
    assert json.loads(files["checkpoint.json"]) == {"saved_on": "SIGTERM"}
    lines = [e.message for e in plane.follow_logs("training", "stop", follow=False)]
    assert lines.count("checkpoint saved") == 2


def test_cluster_status_lists_the_nodes(swarm: Swarm, tmp_path: Path) -> None:
    env = shipyard_env(tmp_path / "data", runtime="swarm", swarm_node_engines=",".join(
        f"{host}={url}" for host, url in swarm.engines.items()))
    result = run(["cluster", "status", "--json"], env)
    assert result.exit_code == 0, result.output
    nodes = {n["Hostname"]: n for n in json.loads(result.output)["Nodes"]}
    assert {f"shipyard-swn{i}" for i in range(1, WORKERS + 1)} <= set(nodes)
    workers = [n for n in nodes.values() if n["Role"] == "worker"]
    assert len(workers) == WORKERS
    assert all(n["State"] == "ready" and n["Cpus"] > 0 for n in workers)
    manager = next(n for n in nodes.values() if n["Role"] == "manager")
    assert manager["Availability"] == "drain"
    table = run(["cluster", "status"], env).output
    assert "shipyard-swn1" in table and "(manager)" in table




def test_network_isolation_on_a_node(plane: ControlPlane, images: dict[str, str],
                                     tmp_path: Path) -> None:
    plane.create("training", training_request(
        "isolated", tmp_path, image=images["behaviours"], instance_type="local",
        max_runtime_s=600, Environment={"MODE": "network"}, EnableNetworkIsolation=True))
    record = plane.wait("training", "isolated", timeout=120)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    lines = [e.message for e in plane.follow_logs("training", "isolated", follow=False)]
    # On a network of its own, internal: no route out, and no other container on it.
    assert any(line.startswith("network: no") for line in lines), lines

# Last: these lose nodes for good (the module's later tests would find fewer).
#: Clients invoking the endpoint at once while a node is lost.
LOAD_THREADS = 3


def lose_node(hostname: str) -> None:
    """The worker ``hostname`` fails as a machine does (scripts/swarm-fixture.sh kill)."""
    index = hostname.removeprefix("shipyard-swn")
    subprocess.run(["bash", str(SCRIPT), "kill", index], check=True, timeout=60,
                   env={**os.environ, "SHIPYARD_SWARM_FIXTURE_DIR": str(FIXTURE_DIR)})


def test_endpoint_spread_over_three_nodes_rides_out_a_lost_node(
        plane: ControlPlane, images: dict[str, str]) -> None:
    record = planes.deploy(plane, "spread", images["plain-serve"], None, count=3)
    assert record["EndpointStatus"] == "InService", record.get("FailureReason")
    runtime = runtime_of(plane)
    containers = runtime.list({"org.shipyard.job-name": "spread"})
    placed = {c: runtime.inspect(c) for c in containers}
    nodes = {c: s.node for c, s in placed.items() if s is not None and s.running}
    assert len(nodes) == 3 and len(set(nodes.values())) == 3, nodes

    answers: list[int] = []
    failures: list[tuple[float, str]] = []
    stop = threading.Event()

    def load() -> None:
        invoke = planes.Invoker(plane)
        try:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    invoke("spread", b"{}")
                    answers.append(200)
                except Exception as exc:
                    failures.append((time.monotonic() - began, f"{type(exc).__name__}: {exc}"))
        finally:
            invoke.close()

    workers = [threading.Thread(target=load, daemon=True) for _ in range(LOAD_THREADS)]
    for worker in workers:
        worker.start()
    try:
        until("requests flowing", lambda: len(answers) > 20, 30)
        lost = next(iter(nodes.values()))
        lose_node(lost)
        before = len(answers)
        # The platform learns of the loss from the swarm (the node goes down) and starts the
        # lost instance on a node that is left.
        until("a replacement on another node", lambda: _spread_again(runtime, lost), 120,
              poll=0.5)
        until("requests after the replacement", lambda: len(answers) > before + 50, 60)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    # Only requests the lost machine had already taken may fail (InvokeEndpoint is not
    # retried once a container may have acted on it): at most one per client, and as soon as
    # the platform knows the machine is gone, not at the invocation's timeout.
    assert len(failures) <= LOAD_THREADS, failures
    assert all(took < 45 for took, _ in failures), failures
    described = plane.describe("endpoint", "spread")
    variant = described["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == 3, variant


def _spread_again(runtime: SwarmRuntime, lost: str) -> bool:
    states = [runtime.inspect(c) for c in runtime.list({"org.shipyard.job-name": "spread"})]
    live = [s for s in states if s is not None and s.running and not s.waiting]
    return len(live) == 3 and lost not in {s.node for s in live}


def test_lost_node_fails_the_job_naming_the_host(plane: ControlPlane,
                                                 images: dict[str, str],
                                                 tmp_path: Path) -> None:
    plane.create("training", training_request(
        "lost", tmp_path, image=images["behaviours"], instance_type="local",
        instance_count=2, max_runtime_s=600, Environment={"MODE": "sleep", "SLEEP": "300"}))
    runtime = runtime_of(plane)

    def placed() -> dict[str, str]:
        found = {}
        for c in runtime.list({"org.shipyard.job-name": "lost"}):
            state = runtime.inspect(c)
            if state is not None and state.running and state.node and not state.waiting:
                found[c.rsplit("-", 1)[-1]] = state.node
        return found

    until("both hosts running", lambda: len(placed()) == 2, 120, poll=0.5)
    node = placed()["2"]
    lose_node(node)
    record = plane.wait("training", "lost", timeout=120)
    assert record["TrainingJobStatus"] == "Failed"
    assert "algo-2" in record["FailureReason"] and node in record["FailureReason"], record[
        "FailureReason"]
