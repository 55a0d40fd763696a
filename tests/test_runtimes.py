"""One contract suite for every runtime (fake, process, docker), then what only one can do.

Real processes and real containers: scripts are Python run by ``python3 -c``; the fake runs no
code, so each case also says what the fake should do (``fake=``), and cases that are about
what code sees (env, mounts) are not applicable to it.
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import docker
import pytest

from shipyard.errors import ImageNotFound, ResourceInUse, ResourceNotFound, ValidationError
from shipyard.runtimes import (
    MANAGED_LABEL,
    ContainerSpec,
    ContainerState,
    DockerRuntime,
    FakeBehaviour,
    FakeRuntime,
    LogLine,
    Mount,
    ProcessRuntime,
    Runtime,
)
from shipyard.runtimes.base import host_capacity
from shipyard.runtimes.docker import (
    _Dechunker,
    _frames,
    parse_docker_time,
    parse_log_stream,
)
from shipyard.runtimes.process import resolve_command
from tests.support.polling import until

WAIT_S = 60.0


@dataclass
class Harness:
    """A runtime plus how to express a Python script as a spec for it."""

    kind: str
    runtime: Runtime
    tmp: Path
    labels: dict[str, str]
    image: str
    behaviours: dict[str, FakeBehaviour] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)

    def name(self, hint: str = "c") -> str:
        name = f"shipyard-test-{hint}-{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        return name

    def spec(
        self,
        script: str,
        *,
        fake: FakeBehaviour | None = None,
        name: str | None = None,
        **fields: object,
    ) -> ContainerSpec:
        name = name or self.name()
        self.behaviours[name] = fake or FakeBehaviour()
        labels = {**self.labels, **fields.pop("labels", {})}  # type: ignore[dict-item]
        if self.kind == "process":
            fields.setdefault("root_dir", str(self.tmp / f"root-{name}"))
        return ContainerSpec(
            name=name,
            image=self.image,
            entrypoint=["python3"],
            command=["-c", script],
            labels=labels,
            **fields,  # type: ignore[arg-type]
        )

    def lines(self, name: str, since_ns: int = 0, follow: bool = False) -> list[str]:
        return [line.text for line in self.runtime.logs(name, since_ns, follow)]

    def finished(self, name: str) -> ContainerState:
        state = self.runtime.wait(name, WAIT_S)
        assert state is not None, f"{name} still running after {WAIT_S}s"
        return state


def make_harness(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, scope_labels: dict[str, str]
) -> Harness:
    labels = {**scope_labels, "org.shipyard.test-run": uuid.uuid4().hex}
    if kind == "fake":
        behaviours: dict[str, FakeBehaviour] = {}
        fake = FakeRuntime(lambda spec: behaviours[spec.name])
        return Harness("fake", fake, tmp_path, labels, "fake/image:1", behaviours)
    if kind == "process":
        runtime = ProcessRuntime(tmp_path / "processes")
        return Harness("process", runtime, tmp_path, labels, sys.executable)
    client = request.getfixturevalue("docker_client")
    image = request.getfixturevalue("base_image")
    return Harness("docker", DockerRuntime(client, labels=scope_labels), tmp_path, labels, image)


def cleanup(h: Harness) -> None:
    for name in h.names:
        h.runtime.remove(name)
    h.runtime.close()


@pytest.fixture(params=["fake", "process", pytest.param("docker", marks=pytest.mark.docker)])
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, scope_labels: dict[str, str]
) -> Iterator[Harness]:
    h = make_harness(request.param, request, tmp_path, scope_labels)
    yield h
    cleanup(h)


@pytest.fixture
def docker_harness(
    request: pytest.FixtureRequest, tmp_path: Path, scope_labels: dict[str, str]
) -> Iterator[Harness]:
    h = make_harness("docker", request, tmp_path, scope_labels)
    yield h
    cleanup(h)


@pytest.fixture
def process_harness(
    request: pytest.FixtureRequest, tmp_path: Path, scope_labels: dict[str, str]
) -> Iterator[Harness]:
    h = make_harness("process", request, tmp_path, scope_labels)
    yield h
    cleanup(h)


def wait_for_line(h: Harness, name: str, text: str) -> None:
    until(f"{text!r} logged by {name}", lambda: text in h.lines(name), WAIT_S, poll=0.05)


# -- the contract, for every runtime ------------------------------------------------------


def test_exit_code_and_state(harness: Harness) -> None:
    spec = harness.spec(
        "import sys; print('hello', flush=True); sys.exit(3)",
        fake=FakeBehaviour(exit_code=3, logs=("hello",)),
    )
    harness.runtime.start(spec)
    state = harness.finished(spec.name)
    assert state == harness.runtime.inspect(spec.name)
    assert state.running is False and state.exit_code == 3 and state.oom_killed is False
    assert state.started_at is not None and state.finished_at is not None
    assert state.started_at <= state.finished_at <= time.time() + 1
    assert harness.lines(spec.name) == ["hello"]


def test_wait_times_out_with_none_while_running(harness: Harness) -> None:
    spec = harness.spec("import time; time.sleep(60)", fake=FakeBehaviour(duration=None))
    harness.runtime.start(spec)
    started = time.monotonic()
    assert harness.runtime.wait(spec.name, 0.2) is None
    assert time.monotonic() - started < 5
    state = harness.runtime.inspect(spec.name)
    assert state is not None and state.running and state.exit_code is None


def test_logs_resume_without_repeats_and_follow_ends_at_exit(harness: Harness) -> None:
    script = (
        "import sys, time\n"
        "for i in range(5):\n"
        "    print(f'line {i}', flush=True); time.sleep(0.2)\n"
        "print('to stderr', file=sys.stderr, flush=True)\n"
    )
    expected = [f"line {i}" for i in range(5)] + ["to stderr"]
    spec = harness.spec(script, fake=FakeBehaviour(logs=tuple(expected), duration=1.0))
    harness.runtime.start(spec)
    followed = list(harness.runtime.logs(spec.name, follow=True))  # returns only at exit
    assert [line.text for line in followed] == expected
    assert harness.runtime.inspect(spec.name).running is False  # type: ignore[union-attr]
    stamps = [line.timestamp_ns for line in followed]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert abs(stamps[0] / 1e9 - time.time()) < 120
    resumed = harness.lines(spec.name, since_ns=followed[2].timestamp_ns)
    assert resumed == expected[3:]
    assert harness.lines(spec.name, since_ns=followed[-1].timestamp_ns) == []
    assert list(harness.runtime.logs(spec.name, follow=True))[-1].text == "to stderr"


def test_sigterm_reaches_the_main_process(harness: Harness) -> None:
    script = (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        "    print('got TERM', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
        "sys.exit(9)\n"
    )
    spec = harness.spec(script, fake=FakeBehaviour(logs=("ready",), duration=None, on_sigterm=0))
    harness.runtime.start(spec)
    wait_for_line(harness, spec.name, "ready")
    harness.runtime.signal(spec.name, signal.SIGTERM)
    state = harness.finished(spec.name)
    assert state.exit_code == 0
    if harness.kind != "fake":
        assert harness.lines(spec.name)[-1] == "got TERM"
    harness.runtime.signal(spec.name, signal.SIGTERM)  # not running: a no-op
    harness.runtime.signal(f"missing-{uuid.uuid4().hex}", signal.SIGTERM)


def test_sigkill_ends_with_137(harness: Harness) -> None:
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(120)"
    )
    fake = FakeBehaviour(logs=("ready",), duration=None, on_sigterm=None)
    spec = harness.spec(script, fake=fake)
    harness.runtime.start(spec)
    wait_for_line(harness, spec.name, "ready")
    harness.runtime.signal(spec.name, signal.SIGTERM)
    assert harness.runtime.wait(spec.name, 0.5) is None  # ignored, as a stubborn job does
    harness.runtime.signal(spec.name, signal.SIGKILL)
    assert harness.finished(spec.name).exit_code == 137


def test_env_and_read_only_and_writable_mounts(harness: Harness) -> None:
    if harness.kind == "fake":
        pytest.skip("the fake runs no code: nothing sees env or mounts")
    data, model = harness.tmp / "data", harness.tmp / "model"
    data.mkdir()
    model.mkdir()
    (data / "input.txt").write_text("from the host")
    script = (
        "import os\n"
        "root = os.environ.get('SAGEMAKER_BASE_DIR', '/opt/ml')\n"
        "text = open(os.path.join(root, 'input/data/train/input.txt')).read()\n"
        "with open(os.path.join(root, 'model/out.txt'), 'w') as f:\n"
        "    f.write(os.environ['GREETING'] + ': ' + text)\n"
        "try:\n"
        "    open(os.path.join(root, 'input/data/train/new.txt'), 'w').close()\n"
        "    print('ro-not-enforced', flush=True)\n"
        "except OSError:\n"
        "    print('ro-enforced', flush=True)\n"
    )
    spec = harness.spec(
        script,
        env={"GREETING": "hi"},
        mounts=[
            Mount(str(data), "/opt/ml/input/data/train", read_only=True),
            Mount(str(model), "/opt/ml/model"),
        ],
    )
    harness.runtime.start(spec)
    state = harness.finished(spec.name)
    assert state.exit_code == 0, harness.lines(spec.name)
    assert (model / "out.txt").read_text() == "hi: from the host"
    enforced = harness.kind == "docker" or (
        isinstance(harness.runtime, ProcessRuntime) and harness.runtime.private_mount_namespace
    )
    assert harness.lines(spec.name)[-1] == ("ro-enforced" if enforced else "ro-not-enforced")
    assert not (data / "new.txt").exists() or not enforced


def test_bad_entry_point_is_an_exit_not_an_exception(harness: Harness) -> None:
    error = "exec: /no/such/program: no such file or directory"
    spec = replace(
        harness.spec("pass", fake=FakeBehaviour(exit_code=127, error=error)),
        entrypoint=["/no/such/program"],
    )
    harness.runtime.start(spec)
    state = harness.finished(spec.name)
    assert state.exit_code == 127
    said = [state.error, *harness.lines(spec.name)]
    assert any("no such file" in text.lower() for text in said), said


def test_capacity_is_a_limit_the_runtime_accepts(harness: Harness) -> None:
    # What control.limits caps instance types at: a container asking for all of it starts
    # (an engine refuses more CPUs than it has: "Range of CPUs is from 0.01 to 2.00").
    capacity = harness.runtime.capacity()
    if harness.kind == "fake":
        assert capacity is None  # unknown unless a test says: nothing is capped
        return
    assert capacity is not None and capacity.cpus >= 1 and capacity.memory_bytes > 1 << 28
    if harness.kind == "process":
        assert capacity == host_capacity()
    else:
        assert capacity.gpus == 0  # containers get no GPU device requests
    spec = harness.spec("print('fits', flush=True)", cpus=capacity.cpus,
                        memory_bytes=capacity.memory_bytes)
    harness.runtime.start(spec)
    assert harness.finished(spec.name).exit_code == 0
    assert "fits" in harness.lines(spec.name)  # the process runtime notes it enforces none


def test_name_conflict_is_resource_in_use(harness: Harness) -> None:
    spec = harness.spec("import time; time.sleep(60)", fake=FakeBehaviour(duration=None))
    harness.runtime.start(spec)
    with pytest.raises(ResourceInUse):
        harness.runtime.start(replace(spec, command=["-c", "print('second')"]))
    assert harness.runtime.inspect(spec.name).running  # type: ignore[union-attr]


def test_missing_container(harness: Harness) -> None:
    name = f"shipyard-test-missing-{uuid.uuid4().hex}"
    assert harness.runtime.inspect(name) is None
    with pytest.raises(ResourceNotFound):
        harness.runtime.wait(name, 0.1)
    with pytest.raises(ResourceNotFound):
        list(harness.runtime.logs(name))
    harness.runtime.remove(name)


def test_remove_kills_and_is_idempotent(harness: Harness) -> None:
    spec = harness.spec("import time; time.sleep(60)", fake=FakeBehaviour(duration=None))
    harness.runtime.start(spec)
    harness.runtime.remove(spec.name)
    assert harness.runtime.inspect(spec.name) is None
    harness.runtime.remove(spec.name)
    harness.runtime.start(spec)  # the name is free again
    assert harness.runtime.inspect(spec.name) is not None


def test_list_by_labels(harness: Harness) -> None:
    first = harness.spec("pass", labels={"org.shipyard.role": "a"})
    second = harness.spec("pass", labels={"org.shipyard.role": "b"})
    for spec in (first, second):
        harness.runtime.start(spec)
    run = {"org.shipyard.test-run": harness.labels["org.shipyard.test-run"]}
    assert harness.runtime.list(run) == sorted([first.name, second.name])
    assert harness.runtime.list({**run, MANAGED_LABEL: "true"}) == sorted([first.name, second.name])
    assert harness.runtime.list({**run, "org.shipyard.role": "b"}) == [second.name]
    assert harness.runtime.list({**run, "org.shipyard.role": "c"}) == []


# -- Docker only -------------------------------------------------------------------------


@pytest.mark.docker
def test_docker_oom_is_detected(docker_harness: Harness) -> None:
    h = docker_harness
    spec = h.spec(
        "b = bytearray(200 * 1024 * 1024); print('survived')", memory_bytes=32 * 1024 * 1024
    )
    h.runtime.start(spec)
    state = h.finished(spec.name)
    assert state.oom_killed is True and state.exit_code == 137


@pytest.mark.docker
def test_docker_hosts_resolve_each_other_on_a_network(docker_harness: Harness) -> None:
    h = docker_harness
    network = f"shipyard-test-net-{uuid.uuid4().hex[:10]}"
    h.runtime.create_network(network, h.labels)
    h.runtime.create_network(network, h.labels)  # idempotent
    script = (
        "import socket, sys, time\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        print(socket.gethostbyname(sys.argv[1]), flush=True); break\n"
        "    except OSError:\n"
        "        time.sleep(0.1)\n"
        "else:\n"
        "    sys.exit(1)\n"
        "time.sleep(2)\n"  # stay resolvable while the peer looks us up
    )
    try:
        specs = [
            replace(
                h.spec(script, network=network, hostname=me, network_aliases=[me]),
                command=["-c", script, peer],
            )
            for me, peer in (("algo-1", "algo-2"), ("algo-2", "algo-1"))
        ]
        for spec in specs:
            h.runtime.start(spec)
        for spec in specs:
            assert h.finished(spec.name).exit_code == 0, h.lines(spec.name)
    finally:
        for spec in specs:
            h.runtime.remove(spec.name)
        h.runtime.remove_network(network)
        h.runtime.remove_network(network)


@pytest.mark.docker
def test_docker_network_none_has_only_loopback(docker_harness: Harness) -> None:
    h = docker_harness
    spec = h.spec("import os; print(sorted(os.listdir('/sys/class/net')))", network="none")
    h.runtime.start(spec)
    assert h.finished(spec.name).exit_code == 0
    assert h.lines(spec.name) == ["['lo']"]


@pytest.mark.docker
def test_docker_missing_image(docker_harness: Harness) -> None:
    h = docker_harness
    missing = f"shipyard-test/missing:{uuid.uuid4().hex[:8]}"
    with pytest.raises(ImageNotFound, match="build or load it first"):
        h.runtime.check_image(missing)
    with pytest.raises(ImageNotFound):
        h.runtime.start(replace(h.spec("pass"), image=missing))
    h.runtime.check_image(h.image)


@pytest.mark.docker
def test_docker_publishes_ports_on_loopback(
    docker_harness: Harness, docker_client: docker.DockerClient
) -> None:
    h = docker_harness
    spec = replace(
        h.spec("", ports={8080: 0}, cpus=0.5, memory_bytes=256 * 1024 * 1024),
        command=["-m", "http.server", "8080", "--bind", "0.0.0.0"],
    )
    h.runtime.start(spec)
    state = h.runtime.inspect(spec.name)
    assert state is not None and state.running and state.ports[8080] > 0
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{state.ports[8080]}/", timeout=2) as r:
                assert r.status == 200
                break
        except OSError:
            assert time.monotonic() < deadline, "http.server never answered"
            time.sleep(0.1)
    info = docker_client.api.inspect_container(spec.name)  # what the engine recorded
    host = info["HostConfig"]
    assert host["Privileged"] is False and not host["AutoRemove"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == host["MemorySwap"] == 256 * 1024 * 1024
    assert host["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"
    assert info["Config"]["Labels"][MANAGED_LABEL] == "true"


@pytest.mark.docker
def test_docker_refuses_the_engine_socket(docker_harness: Harness) -> None:
    h = docker_harness
    spec = h.spec("pass", mounts=[Mount("/var/run/docker.sock", "/var/run/docker.sock")])
    with pytest.raises(ValidationError):
        h.runtime.start(spec)
    assert h.runtime.inspect(spec.name) is None


# -- Process only --------------------------------------------------------------------------


def test_process_hard_coded_opt_ml_lands_in_root_dir(process_harness: Harness) -> None:
    h = process_harness
    assert isinstance(h.runtime, ProcessRuntime)
    if not h.runtime.private_mount_namespace:
        pytest.skip("no private mount namespace on this machine")
    spec = h.spec(
        "import os; os.makedirs('/opt/ml/model', exist_ok=True); "
        "open('/opt/ml/model/weights.txt', 'w').write('42')"
    )
    h.runtime.start(spec)
    assert h.finished(spec.name).exit_code == 0, h.lines(spec.name)
    assert (Path(spec.root_dir or "") / "model" / "weights.txt").read_text() == "42"
    assert not Path("/opt/ml/model/weights.txt").exists()  # the host's /opt/ml is untouched


def test_process_outlives_its_starter_and_reattaches(process_harness: Harness) -> None:
    h = process_harness
    spec = h.spec("import time; print('working', flush=True); time.sleep(1.5); raise SystemExit(7)")
    starter = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from shipyard.runtimes import ContainerSpec, ProcessRuntime\n"
        "spec = ContainerSpec(**json.loads(sys.argv[2]))\n"
        "ProcessRuntime(Path(sys.argv[1])).start(spec)\n"
    )
    fields = {
        k: getattr(spec, k)
        for k in ("name", "image", "entrypoint", "command", "labels", "root_dir")
    }
    subprocess.run(
        [sys.executable, "-c", starter, str(h.tmp / "processes"), json.dumps(fields)],
        check=True,
        timeout=60,
    )
    # The process that started it is gone; a fresh runtime over the same folder takes over.
    fresh = ProcessRuntime(h.tmp / "processes")
    state = fresh.inspect(spec.name)
    assert state is not None and state.running
    final = fresh.wait(spec.name, WAIT_S)
    assert final is not None and final.exit_code == 7
    assert [line.text for line in fresh.logs(spec.name)][-1] == "working"


def test_process_bad_image_and_mount_outside_the_contract(process_harness: Harness) -> None:
    h = process_harness
    with pytest.raises(ImageNotFound):
        h.runtime.check_image(f"no-such-command-{uuid.uuid4().hex}")
    with pytest.raises(ValidationError):
        h.runtime.start(h.spec("pass", mounts=[Mount(str(h.tmp), "/data")]))


def test_process_project_folder_runs_its_own_executable(process_harness: Harness) -> None:
    h = process_harness
    project = h.tmp / "project"
    project.mkdir()
    (project / "train").write_text('#!/bin/sh\necho "trained in $SAGEMAKER_BASE_DIR $1"\n')
    (project / "train").chmod(0o755)
    spec = ContainerSpec(
        name=h.name(),
        image=f"process:{project}",
        command=["train", "fast"],
        labels=h.labels,
        root_dir=str(h.tmp / "root"),
    )
    h.runtime.start(spec)
    assert h.finished(spec.name).exit_code == 0
    assert h.lines(spec.name)[-1] == f"trained in {(h.tmp / 'root').resolve()} fast"


def test_resolve_command_falls_back_to_the_toolkit(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('hi')\n")
    spec = ContainerSpec(name="x", image=str(project), command=["train"], env={"A": "1"})
    command = resolve_command(spec, tmp_path / "root")
    assert command.argv == [sys.executable, "-m", "shipyard.toolkit.train"]
    assert command.env["SAGEMAKER_SUBMIT_DIRECTORY"] == str(project)
    assert command.env["SAGEMAKER_PROGRAM"] == "train.py"
    assert command.env["SAGEMAKER_BASE_DIR"] == str(tmp_path / "root")
    assert command.env["A"] == "1" and command.cwd == str(project)
    chosen = resolve_command(replace(spec, env={"SAGEMAKER_PROGRAM": "main.py"}), tmp_path)
    assert chosen.env["SAGEMAKER_PROGRAM"] == "main.py"
    with pytest.raises(ValidationError):
        resolve_command(replace(spec, command=None), tmp_path)


# -- the fake's own controls -----------------------------------------------------------------


def test_fake_finish_oom_and_images() -> None:
    fake = FakeRuntime(lambda spec: FakeBehaviour(duration=None), images=["known:1"])
    with pytest.raises(ImageNotFound):
        fake.start(ContainerSpec(name="a", image="unknown:1"))
    fake.start(ContainerSpec(name="a", image="known:1"))
    fake.emit("a", "later")
    fake.finish("a", 137, oom_killed=True)
    state = fake.wait("a", 0)
    assert state is not None and state.oom_killed and state.exit_code == 137
    assert [line.text for line in fake.logs("a")] == ["later"]
    timed = FakeRuntime(lambda spec: FakeBehaviour(duration=0.1, oom_killed=True))
    timed.start(ContainerSpec(name="b", image="any"))
    final = timed.wait("b", 5)
    assert final is not None and final.oom_killed and final.exit_code == 137
    assert FakeRuntime(lambda spec: 4).wait is not None
    simple = FakeRuntime(lambda spec: 4)
    simple.start(ContainerSpec(name="c", image="any"))
    assert simple.wait("c", 1).exit_code == 4  # type: ignore[union-attr]


# -- pure parsing --------------------------------------------------------------------------


def _chunked(data: bytes, size: int) -> Iterator[bytes]:
    return iter([data[i : i + size] for i in range(0, len(data), size)])


@pytest.mark.parametrize("size", [1, 7, 64, 10_000], ids=lambda s: f"chunk{s}")
def test_docker_log_stream_parsing_any_chunking(size: int) -> None:
    stream = (
        b"2024-05-01T10:00:00.000000001Z first\n"
        b"2024-05-01T10:00:00.500000000Z caf\xc3\xa9 \xff\r\n"
        b"2024-05-01T10:00:01.000000000Z last"
    )
    lines = list(parse_log_stream(_chunked(stream, size)))
    base = 1714557600 * 1_000_000_000
    assert lines == [
        LogLine(base + 1, "first"),
        LogLine(base + 500_000_000, "caf\u00e9 \ufffd"),
        LogLine(base + 1_000_000_000, "last"),
    ]
    assert [x.text for x in parse_log_stream(_chunked(stream, size), base + 1)] == [
        "caf\u00e9 \ufffd",
        "last",
    ]


def test_docker_log_stream_joins_partial_records() -> None:
    frames = [
        b"2024-05-01T10:00:00.000000001Z " + b"a" * 16384,
        b"2024-05-01T10:00:00.000000002Z " + b"b" * 10 + b"\n",
    ]
    (line,) = parse_log_stream(iter(frames))
    assert line.text == "a" * 16384 + "b" * 10


def test_docker_log_stream_fractions_and_non_records() -> None:
    stream = (
        b"2024-05-01T10:00:00Z whole second\n"
        b"2024-05-01T10:00:00.5Z half\n"
        b"2024-05-01T10:00:00.123456789Z nanos\n"
        b"2024-05-01T10:00:00.Z no fraction digits\n"
        b"Error grabbing logs: an engine notice\n"
        b"2024-05-01T10:00:01.25Z next second\n"
    )
    base = 1714557600 * 1_000_000_000
    assert [(x.timestamp_ns - base, x.text) for x in parse_log_stream(iter([stream]))] == [
        (0, "whole second"), (500_000_000, "half"), (123_456_789, "nanos"),
        (1_250_000_000, "next second")]


@pytest.mark.parametrize("size", [1, 7, 64, 10_000], ids=lambda s: f"read{s}")
def test_docker_multiplexed_frames_any_read_size(size: int) -> None:
    payloads = [b"2024-05-01T10:00:00.1Z out\n", b"2024-05-01T10:00:00.2Z err\n", b"",
                b"2024-05-01T10:00:00.3Z " + b"z" * 5000 + b"\n"]
    wire = b"".join(struct.pack(">BxxxL", 1 + i % 2, len(p)) + p
                    for i, p in enumerate(payloads))
    reads = _chunked(wire, size)
    assert list(_frames(lambda: next(reads, b""))) == payloads


@pytest.mark.parametrize("size", [1, 5, 64, 10_000], ids=lambda s: f"read{s}")
def test_chunked_http_body_undone_over_any_read_size(size: int) -> None:
    pieces = [b"a" * 26, b"", b"hello\r\nworld", b"x" * 300]
    wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) if i == 0 else
                    b"%x\r\n%s\r\n" % (len(p), p) for i, p in enumerate(pieces) if p)
    wire += b"0\r\n\r\n" + b"never read"
    reads = _chunked(wire, size)
    body = _Dechunker(lambda n: next(reads, b""))
    got = b"".join(iter(body.read, b""))
    assert got == b"".join(pieces)


def test_parse_docker_time() -> None:
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    assert parse_docker_time("2024-05-01T10:00:00.25Z") == pytest.approx(1714557600.25)


def test_public_surface() -> None:
    from shipyard import runtimes

    public = {name for name in vars(runtimes) if not name.startswith("_")}
    modules = {"base", "docker", "fake", "process", "swarm", "swarm_objects", "swarm_images",
               "swarm_shipping", "swarm_placement", "kubernetes", "kubernetes_shipping",
               "kubernetes_replicas", "kubernetes_names", "kubernetes_errors", "shipping", "stager", "annotations", "Path",
               "RuntimeUnavailable"}
    assert set(runtimes.__all__) == public - modules
