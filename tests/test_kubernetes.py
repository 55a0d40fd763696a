"""The kubernetes runtime on a real single-node cluster (tests/support/k8s.py): training jobs
that complete, fail by a failure file, an exit code or memory, stop on request and at their
MaxRuntime, and leave nothing behind in the cluster."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard import contract
from shipyard.contract.labels import MANAGED_LABEL, SCOPE_LABEL
from shipyard.control import ControlPlane
from shipyard.control.context import runtime_for
from shipyard.errors import ValidationError
from shipyard.runtimes.kubernetes import KubernetesRuntime, kubernetes_name
from shipyard.settings import Settings
from tests.support import planes
from tests.support.files import model_tarball, tar_files
from tests.support.images import build_image
from tests.support.jobs import ROLE, training_request
from tests.support.k8s import Cluster
from tests.support.k8s import k8s as k8s  # noqa: PLC0414 - the session's fixture
from tests.support.load import ThreadedLoad
from tests.support.polling import until
from tests.support.s3server import DEPOT_KEY, depot_boto, seaweed
from tests.support.workloads import ALL_REDUCE, STAGED, run_staged_jobs


@pytest.fixture(scope="module")
def loaded(k8s: Cluster, images: dict[str, str], docker_client: Any,
           base_image: str) -> dict[str, str]:
    all_reduce = build_image(
        docker_client, "all-reduce", {"a.py": ALL_REDUCE},
        "COPY a.py /opt/program/\nENTRYPOINT [\"python3\", \"/opt/program/a.py\"]",
        with_toolkit=False)
    staged = build_image(
        docker_client, "staged", {"t.py": STAGED},
        "COPY t.py /opt/program/\nENTRYPOINT [\"python3\", \"/opt/program/t.py\"]",
        with_toolkit=False)
    # The stager runs in the base image (setting kubernetes_stager_image).
    k8s.load(images["behaviours"], images["plain-serve"], all_reduce, staged, base_image)
    return {**images, "all-reduce": all_reduce, "staged": staged}


@pytest.fixture(scope="module")
def depot_store(k8s: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The server's own S3 store, listening where the pods reach it (the node's address)."""
    with seaweed(tmp_path_factory.mktemp("depot") / "s3", DEPOT_KEY, k8s.node_ip) as store:
        yield store


@pytest.fixture
def plane(tmp_path: Path, k8s: Cluster, scope_labels: dict[str, str],
          loaded: dict[str, str]) -> Iterator[ControlPlane]:
    settings = Settings.load({
        "data_dir": str(tmp_path / "state"), "runtime": "kubernetes", "stop_grace_seconds": 3,
        "scope": scope_labels[SCOPE_LABEL], "kubernetes_kubeconfig": k8s.kubeconfig,
        "kubernetes_namespace": "shipyard-tests", "kubernetes_shared_paths": str(tmp_path),
        # The fixture has no cluster DNS: hosts are named to each other in hostAliases.
        "kubernetes_cluster_dns": False},
        environ={})
    cp = ControlPlane(settings, runtime_for(settings))
    yield cp
    planes.remove_endpoints(cp)
    runtime = cp.ctx.runtime
    for name in runtime.list(scope_labels):
        runtime.remove(name)
    cp.close()
    assert isinstance(runtime, KubernetesRuntime)
    _await_clean(runtime, scope_labels)


@pytest.fixture
def depot_settings(tmp_path: Path, k8s: Cluster, scope_labels: dict[str, str],
                   loaded: dict[str, str], depot_store: Any) -> Iterator[Settings]:
    """Settings of a plane whose cluster shares no path with it: pods stage and return
    their data. Whatever the test leaves in the cluster is removed after it."""
    settings = Settings.load({
        "data_dir": str(tmp_path / "state"), "runtime": "kubernetes", "stop_grace_seconds": 3,
        "scope": scope_labels[SCOPE_LABEL], "kubernetes_kubeconfig": k8s.kubeconfig,
        "kubernetes_namespace": "shipyard-tests", "kubernetes_cluster_dns": False,
        "s3_endpoint_url": depot_store.url, "s3_access_key_id": DEPOT_KEY[0],
        "s3_secret_access_key": DEPOT_KEY[1], "kubernetes_depot": "s3://shipyard-depot/k8s"},
        environ={})
    yield settings
    runtime = runtime_for(settings)
    assert isinstance(runtime, KubernetesRuntime)
    for name in runtime.list(scope_labels):
        runtime.remove(name)
    _await_clean(runtime, scope_labels)
    runtime.close()


@pytest.fixture
def depot_plane(depot_settings: Settings) -> Iterator[ControlPlane]:
    cp = ControlPlane(depot_settings, runtime_for(depot_settings))
    yield cp
    cp.close()


def _await_clean(runtime: KubernetesRuntime, labels: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while left := _leftovers(runtime, labels):
        assert time.monotonic() < deadline, f"left in the cluster: {left}"
        time.sleep(0.5)


def _leftovers(runtime: KubernetesRuntime, labels: dict[str, str]) -> list[str]:
    selector = f"{SCOPE_LABEL}={labels[SCOPE_LABEL]},{MANAGED_LABEL}=true"
    core, ns = runtime._core, runtime.namespace
    apps = runtime._client.AppsV1Api(runtime._api_client)
    return ([f"pod {p.metadata.name}" for p in core.list_namespaced_pod(
                ns, label_selector=selector).items]
            + [f"service {s.metadata.name}" for s in core.list_namespaced_service(
                ns, label_selector=selector).items]
            + [f"deployment {d.metadata.name}" for d in apps.list_namespaced_deployment(
                ns, label_selector=selector).items])


def train(plane: ControlPlane, images: dict[str, str], tmp_path: Path, name: str,
          instance_type: str = "ml.m5.large", max_runtime_s: int = 600, wait: bool = True,
          **env: str) -> dict[str, Any]:
    plane.create("training", training_request(
        name, tmp_path, image=images["behaviours"], instance_type=instance_type,
        max_runtime_s=max_runtime_s, Environment=env))
    return plane.wait("training", name, timeout=180) if wait else {}


def test_a_training_job_completes_with_its_model_and_log(
        plane: ControlPlane, loaded: dict[str, str], tmp_path: Path) -> None:
    record = train(plane, loaded, tmp_path, "k8s-ok", MODE="metrics")
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    assert (tmp_path / "out" / "k8s-ok" / "output" / "model.tar.gz").is_file()
    lines = [e.message for e in plane.follow_logs("training", "k8s-ok", follow=False)]
    assert "mode metrics argv ['train']" in lines
    assert "epoch 3: loss=0.250 accuracy=0.80" in lines


def test_failures_say_why(plane: ControlPlane, loaded: dict[str, str], tmp_path: Path) -> None:
    by_file = train(plane, loaded, tmp_path, "k8s-failure-file", MODE="failure-file")
    assert by_file["TrainingJobStatus"] == "Failed"
    assert by_file["FailureReason"].startswith("ValueError: bad column 'price'")
    by_code = train(plane, loaded, tmp_path, "k8s-exit-3", MODE="exit-3")
    assert by_code["TrainingJobStatus"] == "Failed"
    assert "exited with code 3" in by_code["FailureReason"]
    assert "about to fail" in by_code["FailureReason"]
    # 10 GiB asked of an instance of 4: the kernel kills it, the kubelet says OOMKilled.
    by_memory = train(plane, loaded, tmp_path, "k8s-oom", instance_type="ml.t3.medium",
                      MODE="oom")
    assert by_memory["TrainingJobStatus"] == "Failed"
    assert by_memory["FailureReason"] == contract.OOM_FAILURE_REASON


def test_stop_sends_sigterm_with_the_grace_period(
        plane: ControlPlane, loaded: dict[str, str], tmp_path: Path) -> None:
    train(plane, loaded, tmp_path, "k8s-stop", MODE="checkpoint-on-sigterm", wait=False)
    until("the job running", lambda: "ready" in [
        e.message for e in plane.follow_logs("training", "k8s-stop", follow=False)], 120)
    plane.stop("training", "k8s-stop")
    record = plane.wait("training", "k8s-stop", timeout=60)
    assert record["TrainingJobStatus"] == "Stopped"
    files = tar_files(tmp_path / "out" / "k8s-stop" / "output" / "model.tar.gz")
    assert json.loads(files["checkpoint.json"]) == {"saved_on": "SIGTERM"}


def test_max_runtime_stops_the_job(plane: ControlPlane, loaded: dict[str, str],
                                   tmp_path: Path) -> None:
    record = train(plane, loaded, tmp_path, "k8s-slow", max_runtime_s=3, MODE="sleep",
                   SLEEP="120")
    assert record["TrainingJobStatus"] == "Failed"
    assert record["FailureReason"].startswith("MaxRuntimeExceeded")


def test_names_become_kubernetes_names() -> None:
    assert kubernetes_name("shipyard-training-abc-1234-algo-1") == (
        "shipyard-training-abc-1234-algo-1")
    odd = kubernetes_name("shipyard-training-MyJob-" + "x" * 80 + "-algo-1")
    assert len(odd) <= 63 and odd == odd.lower() and odd[0].isalnum() and odd[-1].isalnum()
    assert odd != kubernetes_name("shipyard-training-myjob-" + "x" * 80 + "-algo-1")


def test_paths_the_nodes_do_not_share_are_refused(
        plane: ControlPlane, loaded: dict[str, str], tmp_path: Path) -> None:
    elsewhere = Path("/tmp") / f"shipyard-k8s-not-shared-{uuid.uuid4().hex[:6]}"
    elsewhere.mkdir()
    try:
        (elsewhere / "a.csv").write_text("1\n")
        plane.create("training", training_request(
            "k8s-unshared", tmp_path, image=loaded["behaviours"], data=elsewhere))
        record = plane.wait("training", "k8s-unshared", timeout=60)
    finally:
        (elsewhere / "a.csv").unlink()
        elsewhere.rmdir()
    assert record["TrainingJobStatus"] == "Failed"
    assert "kubernetes_shared_paths" in record["FailureReason"], record["FailureReason"]


def test_a_processing_job_reads_its_input_and_writes_its_output(
        plane: ControlPlane, loaded: dict[str, str], tmp_path: Path) -> None:
    rows = tmp_path / "rows"
    rows.mkdir()
    (rows / "a.csv").write_text("1\n2\n")
    script = ("import pathlib; rows = pathlib.Path('/opt/ml/processing/input/rows/a.csv')"
              ".read_text().split(); pathlib.Path('/opt/ml/processing/output/report/sum.txt')"
              ".write_text(str(sum(map(int, rows))))")
    plane.create("processing", {
        "ProcessingJobName": "k8s-processing",
        "RoleArn": "arn:aws:iam::000000000000:role/shipyard",
        "AppSpecification": {"ImageUri": loaded["behaviours"],
                             "ContainerEntrypoint": ["python3", "-c", script]},
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.large",
                                                  "InstanceCount": 1, "VolumeSizeInGB": 1}},
        "ProcessingInputs": [{"InputName": "rows", "S3Input": {
            "S3Uri": rows.as_uri(), "LocalPath": "/opt/ml/processing/input/rows",
            "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "report", "S3Output": {
            "S3Uri": (tmp_path / "report").as_uri(),
            "LocalPath": "/opt/ml/processing/output/report", "S3UploadMode": "EndOfJob"}}]},
    })
    record = plane.wait("processing", "k8s-processing", timeout=180)
    assert record["ProcessingJobStatus"] == "Completed", record.get("FailureReason")
    assert (tmp_path / "report" / "sum.txt").read_text() == "3"


class Load(ThreadedLoad):
    """``clients`` threads invoking ``endpoint`` for as long as the ``with`` block runs:
    the answers by the model they name, and every failure."""

    def __init__(self, plane: ControlPlane, endpoint: str, clients: int) -> None:
        super().__init__(clients)
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self._plane, self._endpoint = plane, endpoint
        self._local = threading.local()

    def setup(self) -> None:
        self._local.invoke = planes.Invoker(self._plane)

    def teardown(self) -> None:
        self._local.invoke.close()

    def call(self) -> None:
        try:
            self.answers[str(self._local.invoke.json(self._endpoint, b"q").get("model"))] += 1
        except Exception as exc:  # any failure is what the tests are about
            self.failures.append(f"{type(exc).__name__}: {exc}")

    def count(self) -> int:
        return sum(self.answers.values())


def test_an_endpoint_rides_out_a_deleted_pod(plane: ControlPlane,
                                            loaded: dict[str, str]) -> None:
    """Two instances under load; one's pod is deleted (as a node drain or a person would):
    requests keep being answered by the other, and the platform starts a replacement."""
    record = planes.deploy(plane, "k8s-serve", loaded["plain-serve"], None, count=2)
    assert record["EndpointStatus"] == "InService", record.get("FailureReason")
    runtime = plane.ctx.runtime
    assert isinstance(runtime, KubernetesRuntime)
    before = set(runtime.list({"org.shipyard.job-name": "k8s-serve"}))
    assert len(before) == 2
    with Load(plane, "k8s-serve", clients=1) as load:
        until("answers", lambda: load.count() > 20, 30)
        victim = sorted(before)[0]
        [pod] = runtime._pods(victim)
        # As `kubectl delete pod` does: SIGTERM, then a grace period.
        runtime._core.delete_namespaced_pod(pod.metadata.name, runtime.namespace,
                                            grace_period_seconds=5, _preload_content=False)
        until("a replacement instance", lambda: len(
            set(runtime.list({"org.shipyard.job-name": "k8s-serve"})) - before) == 1, 120,
            poll=0.5)
        # The variant is a Deployment of two; the replacement is the pod it made.
        [replacement] = set(runtime.list({"org.shipyard.job-name": "k8s-serve"})) - before
        [pod] = runtime._pods(replacement)
        assert [o.kind for o in pod.metadata.owner_references] == ["ReplicaSet"]
        apps = runtime._client.AppsV1Api(runtime._api_client)
        [deployment] = apps.list_namespaced_deployment(
            runtime.namespace, label_selector="org.shipyard.job-name=k8s-serve").items
        assert deployment.spec.replicas == 2
        probe = deployment.spec.template.spec.containers[0].readiness_probe
        assert (probe.http_get.path, probe.http_get.port) == ("/ping", 8080)
        served = load.count()
        until("answers after", lambda: load.count() > served + 20, 30)
    # Only a request the pod had already taken when it got SIGTERM may fail (InvokeEndpoint
    # is not retried once a container may have acted on it): one client, at most one.
    assert len(load.failures) <= 1, load.failures[:3]
    until("two instances again", lambda: sum(
        v["CurrentInstanceCount"] for v in plane.describe("endpoint", "k8s-serve")[
            "ProductionVariants"]) == 2, 60)
    planes.remove_endpoints(plane)


def test_a_blue_green_update_under_load_fails_nothing(
        plane: ControlPlane, loaded: dict[str, str], tmp_path: Path) -> None:
    """UpdateEndpoint to a new model under load: the new pods are ready before traffic
    moves, the old ones retire after, and no request fails."""
    v1 = model_tarball(tmp_path, "v1", {"model.txt": "v1"}).as_uri()
    v2 = model_tarball(tmp_path, "v2", {"model.txt": "v2"}).as_uri()
    record = planes.deploy(plane, "k8s-bg", loaded["plain-serve"], v1, count=2)
    assert record["EndpointStatus"] == "InService", record.get("FailureReason")
    runtime = plane.ctx.runtime
    fleet = {"org.shipyard.job-name": "k8s-bg"}
    old = set(runtime.list(fleet))
    plane.create("model", {"ModelName": "k8s-bg-model-2", "ExecutionRoleArn": ROLE,
                           "PrimaryContainer": {"Image": loaded["plain-serve"],
                                                "ModelDataUrl": v2}})
    plane.create("endpoint-config", {"EndpointConfigName": "k8s-bg-config-2",
                                     "ProductionVariants": [{
                                         "VariantName": "AllTraffic",
                                         "ModelName": "k8s-bg-model-2",
                                         "InitialInstanceCount": 2}]})
    with Load(plane, "k8s-bg", clients=2) as load:
        until("answers", lambda: load.answers["v1"] > 20, 30)
        plane.update_endpoint({"EndpointName": "k8s-bg", "EndpointConfigName": "k8s-bg-config-2"})
        record = plane.wait_endpoint("k8s-bg", timeout=180)
        until("the old pods retired", lambda: not old & set(runtime.list(fleet)), 120, poll=0.5)
        served = load.answers["v2"]
        until("answers after", lambda: load.answers["v2"] > served + 20, 30)
    assert record["EndpointStatus"] == "InService", record.get("FailureReason")
    assert record["EndpointConfigName"] == "k8s-bg-config-2"
    assert load.failures == [], load.failures[:3]
    assert load.answers["v1"] > 0 and load.answers["v2"] > 0, load.answers
    assert len(runtime.list(fleet)) == 2
    planes.remove_endpoints(plane)


GOLDEN_GPU = Path(__file__).parent / "golden" / "k8s-gpu-shipped-host.json"
GOLDEN = Path(__file__).parent / "golden" / "k8s-training-host.json"


def _offline_kubeconfig(tmp_path: Path) -> str:
    """A kubeconfig of a cluster nobody answers at: enough to build manifests."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n")
    return str(kubeconfig)


def test_a_hosts_pod_manifest(tmp_path: Path) -> None:
    """What a cluster is asked for, whole (no cluster needed): a confined pod with no
    token, requests and limits, the network's DNS search for bare peer names, hostPath."""
    from shipyard.runtimes.base import ContainerSpec, Mount

    runtime = KubernetesRuntime(_offline_kubeconfig(tmp_path), namespace="ns",
                                labels={"org.shipyard.scope": "s"},
                                shared_paths=(Path("/data"),), cpu_overcommit=4,
                                stop_grace_seconds=30)
    spec = ContainerSpec(
        name="shipyard-training-Job1-ab12cd34-algo-2", image="registry.example/train:1",
        command=["train"], env={"A": "1"},
        mounts=[Mount("/data/x", "/opt/ml/input/data/training", True)],
        labels={"org.shipyard.job-name": "Job1"}, hostname="algo-2",
        network="shipyard-training-Job1-ab12cd34", cpus=4, memory_bytes=16 * 2**30)
    manifest = runtime._api_client.sanitize_for_serialization(runtime.pod_manifest(spec))
    assert manifest == json.loads(GOLDEN.read_text())
    with pytest.raises(ValidationError, match="kubernetes_shared_paths"):
        runtime.pod_manifest(ContainerSpec(name="x", image="i", mounts=[Mount("/etc", "/e")]))


def test_a_gpu_hosts_pod_with_shipped_mounts(tmp_path: Path) -> None:
    """What 1.20's fixture cannot run, as a manifest: a GPU type's ``nvidia.com/gpu`` limit
    (the platform's limits on a cluster with GPU nodes), and mounts shipped through the
    depot: emptyDir volumes, the stager as an init container, the collector beside."""
    from shipyard.control.depot import S3Depot
    from shipyard.control.limits import fit
    from shipyard.control.s3 import S3Client
    from shipyard.runtimes.base import Capacity, ContainerSpec, Mount

    limits = fit("ml.g5.xlarge", Capacity(48.0, 192 * 2**30, 4))
    assert (limits.cpus, limits.memory_bytes, limits.gpus) == (4, 16 * 2**30, 1)
    assert fit("ml.g5.xlarge", Capacity(48.0, 192 * 2**30, 0)).gpus == 0  # runs on CPU
    state = tmp_path / "state"
    depot = S3Depot(S3Client("http://127.0.0.1:1", "us-east-1", access_key_id="a",
                             secret_access_key="b"), "s3://depot/k8s", "kubernetes_depot")
    runtime = KubernetesRuntime(_offline_kubeconfig(tmp_path), namespace="ns",
                                cpu_overcommit=4, stop_grace_seconds=30, depot=depot,
                                platform_root=state, stager_image="registry.example/py:3")
    job = state / "jobs" / "training" / "Job1-ab12cd34"
    spec = ContainerSpec(
        name="shipyard-training-Job1-ab12cd34-algo-1", image="registry.example/train:1",
        command=["train"], hostname="algo-1", network="shipyard-training-Job1-ab12cd34",
        mounts=[Mount(str(job / "config"), "/opt/ml/input/config", True),
                Mount(str(job / "data"), "/opt/ml/input/data/train", True,
                      fetch=(("s3://data/train/a.csv", "a.csv"),)),
                Mount(str(job / "model"), "/opt/ml/model")],
        cpus=limits.cpus, memory_bytes=limits.memory_bytes, gpus=limits.gpus)
    manifest = runtime._api_client.sanitize_for_serialization(runtime.pod_manifest(
        spec, shipping_urls=("https://store/stage.json?sig", "https://store/collect.json?sig")))
    # The stager's program is this checkout's; the golden file holds its place.
    for container in manifest["spec"]["initContainers"] + manifest["spec"]["containers"][1:]:
        assert container["command"][:2] == ["python3", "-c"]
        container["command"][2] = "<runtimes/stager.py>"
    golden = json.loads(GOLDEN_GPU.read_text().replace("<STATE>", str(state)))
    assert manifest == golden


def test_two_hosts_find_each_other(plane: ControlPlane, loaded: dict[str, str],
                                   tmp_path: Path) -> None:
    """algo-2 reaches algo-1 by its name and they add up their numbers (1 + 4)."""
    plane.create("training", training_request(
        "k8s-allreduce", tmp_path, image=loaded["all-reduce"], instance_type="ml.m5.large",
        instance_count=2, max_runtime_s=600))
    record = plane.wait("training", "k8s-allreduce", timeout=180)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    files = tar_files(tmp_path / "out" / "k8s-allreduce" / "output" / "model.tar.gz")
    assert json.loads(files["result.json"]) == {"me": "algo-1", "sum": 5}


def test_pods_stage_and_return_their_own_data(
        depot_plane: ControlPlane, depot_store: Any, loaded: dict[str, str]) -> None:
    """Nothing shared with the cluster: each pod's stager fetches its inputs from the store
    and the platform's folders from the depot, and returns what the container wrote."""
    boto = depot_boto(depot_store)
    run_staged_jobs(depot_plane, boto, loaded["staged"])

    def in_depot() -> list[str]:
        listed = boto.list_objects_v2(Bucket="shipyard-depot", Prefix="k8s/")
        return [o["Key"] for o in listed.get("Contents") or []]

    until("nothing left in the depot", lambda: not in_depot(), timeout=30)


def test_a_restarted_server_reattaches_to_its_pods(
        depot_settings: Settings, depot_store: Any, loaded: dict[str, str],
        tmp_path: Path) -> None:
    """The supervisors die mid-job (the server with them); a new control plane finds the
    pods again by their labels: one still running, one that ended meanwhile, whose output
    its collector still holds. Both complete once, with their models."""
    boto = depot_boto(depot_store)
    with contextlib.suppress(boto.exceptions.BucketAlreadyOwnedByYou):
        boto.create_bucket(Bucket="data")
    boto.put_object(Bucket="data", Key="rows/a.csv", Body=b"1,2\n")
    channel = [{"ChannelName": "training", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": "s3://data/rows/"}}}]
    first = ControlPlane(depot_settings, runtime_for(depot_settings), launch="process")
    for name, seconds in (("k8s-restart-running", "8"), ("k8s-restart-exited", "1")):
        first.create("training", training_request(
            name, tmp_path, image=loaded["behaviours"], InputDataConfig=channel,
            Environment={"MODE": "sleep", "SLEEP": seconds}))
    for name in ("k8s-restart-running", "k8s-restart-exited"):
        until(f"{name} running", lambda n=name: "mode sleep argv ['train']" in [
            e.message for e in first.follow_logs("training", n, follow=False)], 120)
    for proc in first.processes:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    first.close()
    time.sleep(2)  # the short job's container ends while nothing watches it
    second = ControlPlane(depot_settings, runtime_for(depot_settings), launch="thread")
    try:
        for name in ("k8s-restart-running", "k8s-restart-exited"):
            record = second.wait("training", name, timeout=120)
            assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
            model = tar_files(tmp_path / "out" / name / "output" / "model.tar.gz")
            assert model["done"] == b"sleep"
            lines = [e.message for e in second.follow_logs("training", name, follow=False)]
            assert lines.count("mode sleep argv ['train']") == 1
    finally:
        second.close()
