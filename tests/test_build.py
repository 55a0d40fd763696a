"""``shipyard build``: a project folder becomes one image that SageMaker runs as train and serve.

The pure parts (project detection, references, the recipe, the wheel, the entry point's
environment rules) are tested directly. The rest is real: images built by the real engine from
the Debian base image with an offline wheelhouse (numpy), trained through Shipyard's control
plane, served with ``docker run IMAGE serve``, and pushed to a real registry (Debian's
``docker-registry`` with htpasswd auth, started here on a loopback port).
"""

from __future__ import annotations

import ast
import base64
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from shipyard.build.base import debootstrap_command, make_base_image
from shipyard.build.entrypoint import serve_environment, train_environment
from shipyard.build.errors import ProjectError
from shipyard.build.gpu import gpu_problem
from shipyard.build.project import load_project
from shipyard.build.recipe import (
    BIND_TO_PORT_LABEL,
    MULTI_MODEL_LABEL,
    RECIPE_LABEL,
    RECIPE_VERSION_LABEL,
    Recipe,
    render,
)
from shipyard.build.records import read_records
from shipyard.build.reference import parse_ref
from shipyard.build.wheelhouse import Target, lock_text, toolkit_wheel
from shipyard.cli.build import build
from shipyard.control import ControlPlane
from shipyard.settings import Settings
from shipyard.toolkit.image import TOOLKIT_FILES, TOOLKIT_SCRIPTS
from tests.support import planes
from tests.support.containers import wait_for_ping
from tests.support.images import LABELS, wheelhouse
from tests.support.jobs import training_request
from tests.support.net import http_request
from tests.support.processes import terminate

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
#: Built images are shared by test sessions (reused by content hash), as tests/support's are.
LABEL_ARGS = tuple(f"--label={k}={v}" for k, v in LABELS.items())

TRAIN_PY = """import json, os
import numpy as np

data = os.environ["SM_CHANNEL_TRAINING"]
rows = np.vstack([np.loadtxt(os.path.join(data, n), delimiter=",", ndmin=2)
                  for n in sorted(os.listdir(data))])
w = float(rows[:, 1].sum() / rows[:, 0].sum())
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
    json.dump({"w": w, "uid": os.getuid(), "greeting": os.environ.get("GREETING")}, f)
print("trained w =", w, flush=True)
"""

INFERENCE_PY = """import json, os
import numpy as np

def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.json")) as f:
        return json.load(f)

def predict_fn(data, model):
    return {"predictions": (np.asarray(data, dtype=float) * model["w"]).tolist(),
            "uid": os.getuid()}
"""


def write_project(root: Path, *, fragment: str = "ENV GREETING=hello\n",
                  name: str = "build-test") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(TRAIN_PY)
    (root / "inference.py").write_text(INFERENCE_PY)
    (root / "requirements.txt").write_text("numpy\n")
    (root / "Dockerfile.fragment").write_text(fragment)
    (root / "shipyard.toml").write_text(f'[build]\nname = "{name}"\n')
    return root


def invoke(settings: Settings, *args: str, stdin: str | None = None,
           env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(build, list(args), obj=settings, input=stdin, env=env)


# -- project detection -------------------------------------------------------------------------


def test_project_detection_and_exclusions(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj")
    (root / "lib").mkdir()
    (root / "lib" / "helpers.py").write_text("X = 1\n")
    (root / "lib" / "__pycache__").mkdir()
    (root / "lib" / "__pycache__" / "helpers.cpython-311.pyc").write_bytes(b"\0")
    (root / ".env").write_text("AWS_SECRET_ACCESS_KEY=oops\n")
    (root / ".aws").mkdir()
    (root / ".aws" / "credentials").write_text("[default]\n")
    (root / "data").mkdir()
    (root / "data" / "big.csv").write_text("1,2\n")
    (root / "shipyard.toml").write_text('[build]\nname = "My Model"\nexclude = ["data/"]\n')
    project = load_project(root)
    assert project.name == "my-model"
    assert (project.train_program, project.serve_program) == ("train.py", "inference.py")
    assert project.requirements == "numpy\n"
    assert project.fragment == "ENV GREETING=hello\n"
    # Dependencies come from the wheelhouse; secrets and caches never reach a layer.
    assert project.files == ("inference.py", "lib/helpers.py", "train.py")


def test_project_needs_an_entry_point(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("numpy\n")
    with pytest.raises(ProjectError, match="add train.py .* inference.py"):
        load_project(tmp_path)


def test_serve_only_project_and_configured_names(tmp_path: Path) -> None:
    (tmp_path / "predict.py").write_text("")
    (tmp_path / "shipyard.toml").write_text('[build]\nserve = "predict.py"\nmulti-model = false\n')
    project = load_project(tmp_path)
    assert (project.train_program, project.serve_program) == (None, "predict.py")
    labels = Recipe(project=project, base="b").labels()
    assert labels[BIND_TO_PORT_LABEL] == "true"
    assert MULTI_MODEL_LABEL not in labels
    assert "SAGEMAKER_PROGRAM" not in Recipe(project=project, base="b").environment()


@pytest.mark.parametrize("config, message", [
    ('[build]\ntrian = "x.py"\n', "unknown key build.trian"),
    ('[build]\ngpu = "yes"\n', "build.gpu must be a bool"),
    ('[build]\ntrain = "missing.py"\n', "not a file"),
    ("[build\n", "cannot read"),
], ids=["typo", "type", "missing-file", "bad-toml"])
def test_bad_config_is_refused(tmp_path: Path, config: str, message: str) -> None:
    (tmp_path / "train.py").write_text("")
    (tmp_path / "shipyard.toml").write_text(config)
    with pytest.raises(ProjectError, match=message):
        load_project(tmp_path)


@pytest.mark.parametrize("line", ["FROM debian", "ENTRYPOINT [\"sh\"]", "CMD train",
                                  "user root", "RUN true && \\\n  true\nUSER 0"])
def test_fragment_may_not_take_over_the_contract(tmp_path: Path, line: str) -> None:
    write_project(tmp_path, fragment=f"# setup\nENV A=1\n{line}\n")
    with pytest.raises(ProjectError, match="may not use (FROM|ENTRYPOINT|CMD|USER)"):
        load_project(tmp_path)


# -- references, wheels, recipe ----------------------------------------------------------------


@pytest.mark.parametrize("ref, registry, repository, tag", [
    ("model", "docker.io", "library/model", "latest"),
    ("team/model:1", "docker.io", "team/model", "1"),
    ("127.0.0.1:5000/team/model:v1", "127.0.0.1:5000", "team/model", "v1"),
    ("localhost/model", "localhost", "model", "latest"),
    ("registry.example.com/a/b/c:2.0", "registry.example.com", "a/b/c", "2.0"),
])
def test_parse_ref(ref: str, registry: str, repository: str, tag: str) -> None:
    parsed = parse_ref(ref)
    assert (parsed.registry, parsed.repository, parsed.tag) == (registry, repository, tag)


@pytest.mark.parametrize("ref", ["Model:1", "model@sha256:abc", "model:bad tag", "a//b"])
def test_parse_ref_refuses_bad_references(ref: str) -> None:
    with pytest.raises(ProjectError):
        parse_ref(ref)


def test_target_platforms_follow_glibc() -> None:
    tags = Target(python="3.11", machine="x86_64", glibc=(2, 36)).platforms()
    assert tags[0] == "manylinux_2_36_x86_64"
    assert {"manylinux_2_28_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_37_x86_64" not in tags
    old = Target(python="3.10", machine="aarch64", glibc=(2, 17)).platforms()
    assert old == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]


def test_toolkit_wheel_is_deterministic_and_installs(tmp_path: Path) -> None:
    first = toolkit_wheel(tmp_path / "a")
    second = toolkit_wheel(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as wheel:
        names = wheel.namelist()
        scripts = wheel.read("shipyard-0.1.0.dist-info/entry_points.txt").decode()
    assert "shipyard/toolkit/train.py" in names and "shipyard/build/entrypoint.py" in names
    # The wheel is what the toolkit declares, file by file.
    assert {f for f in TOOLKIT_FILES if not f.endswith("/")} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "shipyard-entry = shipyard.build.entrypoint:main" in scripts
    # train and serve are the project's own console scripts, declared in pyproject.toml.
    declared = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")
                if e.name in {"train", "serve"} and e.value.startswith("shipyard.")}
    assert declared == {k: v for k, v in TOOLKIT_SCRIPTS.items() if k in declared}
    assert set(declared) == {"train", "serve"}
    # pip accepts it (RECORD, METADATA, WHEEL) and installs its console scripts.
    target = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                             "--no-deps", "--target", str(target), str(first)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert (target / "bin" / "shipyard-entry").is_file()


def test_toolkit_wheel_holds_everything_it_imports(tmp_path: Path) -> None:
    with zipfile.ZipFile(toolkit_wheel(tmp_path)) as wheel:
        sources = {n: wheel.read(n) for n in wheel.namelist() if n.endswith(".py")}
    modules = {n.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
               for n in sources}
    assert {"shipyard.toolkit.train", "shipyard.toolkit.serve", "shipyard.build.entrypoint",
            "shipyard.build.gpu"} <= modules
    assert not {m for m in modules if m.startswith(("shipyard.control", "shipyard.api",
                                                    "shipyard.cli", "shipyard.runtimes"))}
    imported = set()
    for name, source in sources.items():
        if name == "shipyard/build/__init__.py":
            continue  # its re-exports load lazily, on the host
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shipyard"):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("shipyard")}
    assert imported - modules == set()


def test_lock_pins_every_wheel_by_hash() -> None:
    lock = lock_text([("shipyard-0.1.0-py3-none-any.whl", "b" * 64),
                      ("numpy-2.1.0-1-cp311-cp311-manylinux_2_17_x86_64.whl", "a" * 64)])
    assert lock.splitlines() == [f"numpy==2.1.0 --hash=sha256:{'a' * 64}",
                                 f"shipyard==0.1.0 --hash=sha256:{'b' * 64}"]


def test_recipe_follows_the_contract(tmp_path: Path) -> None:
    project = load_project(write_project(tmp_path))
    dockerfile = render(Recipe(project=project, base="shipyard/base:bookworm-py311",
                               python="/usr/bin/python3"))
    lines = dockerfile.splitlines()
    # Wheels are installed in a first stage; only the environment reaches the image.
    assert lines[1] == "FROM shipyard/base:bookworm-py311 AS dependencies"
    final = lines.index("FROM shipyard/base:bookworm-py311")
    assert lines[final + 2] == "COPY --from=dependencies /opt/venv /opt/venv"
    assert "wheels" not in "\n".join(lines[final:])
    assert lines[-1] == 'ENTRYPOINT ["shipyard-entry"]'  # exec form, nothing after it
    assert lines[-2] == "USER 1000:1000"
    assert not any(line.startswith("CMD") for line in lines)
    assert "--no-index" in dockerfile and "--require-hashes" in dockerfile
    assert "/opt/ml" not in dockerfile.replace("if [ -e /opt/ml ]", "").replace(
        "'/opt/ml is reserved", "")
    # The fragment runs after the dependencies, before the code, as root.
    assert (dockerfile.index("pip install") < dockerfile.index("ENV GREETING=hello")
            < dockerfile.index("COPY code /opt/program"))
    assert '"SAGEMAKER_PROGRAM"="train.py"' in dockerfile
    assert "nvidia" not in dockerfile.lower()


def test_gpu_recipe_has_cuda_libraries_and_no_driver(tmp_path: Path) -> None:
    project = load_project(write_project(tmp_path))
    recipe = Recipe(project=project, base="shipyard/base:bookworm-py311", gpu=True)
    dockerfile = render(recipe)
    assert "-m shipyard.build.gpu ld-conf > /etc/ld.so.conf.d/shipyard-cuda.conf" in dockerfile
    assert "ldconfig" in dockerfile
    assert "-name 'libcuda.so*'" in dockerfile  # the build fails if a driver is baked in
    assert recipe.environment()["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert recipe.environment()["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert recipe.labels()[RECIPE_LABEL] == "gpu"
    # An nvidia/cuda base already has the runtime: no ld conf of ours.
    with_cuda = render(Recipe(project=project, base="nvidia/cuda", gpu=True, cuda_in_base=True))
    assert "ld-conf" not in with_cuda and "-name 'libcuda.so*'" in with_cuda


def test_no_gpu_here_gives_a_reason() -> None:
    problem = gpu_problem({"NVIDIA_VISIBLE_DEVICES": "all"})
    if problem is None:  # pragma: no cover - a machine with a GPU and driver
        pytest.skip("this machine has a usable GPU")
    assert "--gpus all" in problem or "cuInit" in problem or "sees no GPU" in problem


# -- the entry point ---------------------------------------------------------------------------

IMAGE_ENV = {"SAGEMAKER_PROGRAM": "train.py", "SHIPYARD_TRAIN_PROGRAM": "train.py",
             "SHIPYARD_SERVE_PROGRAM": "inference.py", "SHIPYARD_CODE_DIR": "/opt/program",
             "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/program"}


def test_serve_swaps_the_image_training_program_only() -> None:
    env = dict(IMAGE_ENV)
    serve_environment(env)
    assert env["SAGEMAKER_PROGRAM"] == "inference.py"
    assert env["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/program"
    # A model's own Environment wins (SDK: SAGEMAKER_PROGRAM + an s3:// submit directory).
    env = {**IMAGE_ENV, "SAGEMAKER_PROGRAM": "handler.py"}
    serve_environment(env)
    assert env["SAGEMAKER_PROGRAM"] == "handler.py"


def test_train_only_image_serves_code_from_the_model() -> None:
    env = {**IMAGE_ENV, "SHIPYARD_SERVE_PROGRAM": ""}
    serve_environment(env)
    assert "SAGEMAKER_PROGRAM" not in env and "SAGEMAKER_SUBMIT_DIRECTORY" not in env
    env = {"SHIPYARD_TRAIN_PROGRAM": "fit.py"}
    train_environment(env)
    assert env["SAGEMAKER_PROGRAM"] == "fit.py"
    env = {"SHIPYARD_TRAIN_PROGRAM": "fit.py", "SAGEMAKER_PROGRAM": "other.py"}
    train_environment(env)
    assert env["SAGEMAKER_PROGRAM"] == "other.py"


def test_entry_point_imports_only_the_standard_library() -> None:
    probe = ("import sys; before = set(sys.modules); import shipyard.build.entrypoint; "
             "print(sorted({m.split('.')[0] for m in set(sys.modules) - before}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    outside = set(json.loads(out.replace("'", '"'))) - set(sys.stdlib_module_names)
    assert outside == {"shipyard"}
    assert "shipyard.build.image" not in out


# -- the CLI without an engine -----------------------------------------------------------------


def test_cli_usage_errors(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": str(tmp_path / "state")}, environ={})
    result = invoke(settings, str(tmp_path), "--push")
    assert result.exit_code == 2 and "--push needs --tag" in result.output
    result = invoke(settings, str(tmp_path), "--force")
    assert result.exit_code == 2 and "go with --push" in result.output
    result = invoke(settings, str(tmp_path), "--tag", "Bad:tag name")
    assert result.exit_code == 2 and "not a valid" in result.output


# -- real builds -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    tag: str
    settings: Settings
    root: Path
    house: Path


@pytest.fixture(scope="module")
def built(docker_client: Any, base_image: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Built:
    """The test project, built once per module, offline from the tests' numpy wheelhouse."""
    root = write_project(tmp_path_factory.mktemp("project"))
    house = wheelhouse("numpy")
    settings = Settings.load({"data_dir": str(tmp_path_factory.mktemp("state"))}, environ={})
    result = invoke(settings, str(root), "--find-links", str(house), "--no-index", "--json",
                    *LABEL_ARGS)
    assert result.exit_code == 0, result.output
    return Built(tag=json.loads(result.stdout)["tag"], settings=settings, root=root,
                 house=house)


def _run(client: Any, image: str, labels: dict[str, str], *command: str) -> str:
    out = client.containers.run(image, entrypoint=["sh", "-c"], command=[" ".join(command)],
                                labels=labels, remove=True, network_disabled=True)
    return str(out.decode())


@pytest.mark.docker
def test_image_config_follows_the_contract(built: Built, docker_client: Any,
                                           scope_labels: dict[str, str]) -> None:
    config = docker_client.images.get(built.tag).attrs["Config"]
    assert config["Entrypoint"] == ["shipyard-entry"]
    assert not config["Cmd"]
    assert config["User"] == "1000:1000"
    labels = config["Labels"]
    assert labels[MULTI_MODEL_LABEL] == "true"
    assert labels[BIND_TO_PORT_LABEL] == "true"
    assert labels["org.shipyard.managed"] == "true"
    assert labels[RECIPE_LABEL] == "cpu" and labels[RECIPE_VERSION_LABEL] == "1"
    assert labels["org.shipyard.scope"] == LABELS["org.shipyard.scope"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["SAGEMAKER_PROGRAM"] == "train.py"
    assert env["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/program"
    assert env["GREETING"] == "hello"  # from Dockerfile.fragment
    out = _run(docker_client, built.tag, scope_labels,
               "id -u; test -e /opt/ml && echo opt-ml-exists; ls /opt/program;",
               "test -w /opt/program/train.py && echo code-writable; command -v train; command -v serve")
    assert out.split() == ["1000", "inference.py", "train.py", "/opt/venv/bin/train",
                           "/opt/venv/bin/serve"]


@pytest.mark.docker
def test_unchanged_project_reuses_the_image(built: Built) -> None:
    started = time.monotonic()
    result = invoke(built.settings, str(built.root), "--find-links", str(built.house),
                    "--no-index", "--json", *LABEL_ARGS)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["tag"] == built.tag and answer["reused"] is True
    assert time.monotonic() - started < 15
    events = [e["event"] for e in read_records(built.settings.data_dir)]
    assert events[-2:] == ["build", "build"]


@pytest.mark.docker
def test_entry_point_runs_other_commands_without_a_shell(built: Built, docker_client: Any,
                                                         scope_labels: dict[str, str]) -> None:
    out = docker_client.containers.run(
        built.tag, command=["python3", "-c", "import os; print(os.getppid(), os.getpid())"],
        labels=scope_labels, remove=True, network_disabled=True)
    assert out.decode().split() == ["0", "1"]  # exec'd: the command itself is PID 1
    container = docker_client.containers.run(built.tag, labels=scope_labels, detach=True,
                                             network_disabled=True)
    try:
        assert container.wait(timeout=30)["StatusCode"] == 2
        assert b"usage: shipyard-entry train | serve" in container.logs()
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_dockerfile_and_context_can_be_inspected(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "context"
    result = invoke(built.settings, str(built.root), "--find-links", str(built.house),
                    "--no-index", "--dockerfile", "--context-out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Generated by shipyard build")
    assert (out / "Dockerfile").read_text() == result.stdout
    assert sorted(p.name for p in (out / "code").iterdir()) == ["inference.py", "train.py"]
    lock = (out / "wheels" / "requirements.lock").read_text()
    assert re.search(r"^numpy==\S+ --hash=sha256:[0-9a-f]{64}$", lock, re.M)
    assert re.search(r"^shipyard==0\.1\.0 --hash=sha256:", lock, re.M)
    assert len(list((out / "wheels").glob("*.whl"))) == len(lock.splitlines())


@pytest.mark.docker
def test_make_base_keeps_an_existing_base(docker_client: Any, base_image: str) -> None:
    before = docker_client.images.get(base_image).id
    assert make_base_image(docker_client, base_image) == base_image
    assert docker_client.images.get(base_image).id == before
    assert debootstrap_command(Path("/r"))[:3] == [
        "debootstrap", "--variant=minbase", "--include=python3,python3-venv,python3-pip,"
        "ca-certificates"]


plane = planes.docker_jobs_plane


def _training_request(name: str, image: str, tmp: Path) -> dict[str, Any]:
    rows = {f"part-{i}.csv": f"{i},{2 * i}\n" for i in range(1, 4)}
    return training_request(name, tmp, image=image, files=rows, instance_type="local",
                            max_runtime_s=300)


@pytest.mark.docker
def test_train_then_serve_the_same_image(built: Built, plane: ControlPlane, docker_client: Any,
                                         scope_labels: dict[str, str], tmp_path: Path) -> None:
    # `docker run IMAGE train`, through the control plane: /opt/ml mounted, channels staged.
    plane.create("training", _training_request("built-train", built.tag, tmp_path))
    record = plane.wait("training", "built-train", timeout=120)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    model_dir = tmp_path / "model"
    with tarfile.open(tmp_path / "out" / "built-train" / "output" / "model.tar.gz") as tar:
        tar.extractall(model_dir, filter="data")
    model = json.loads((model_dir / "model.json").read_text())
    assert model == {"w": 2.0, "uid": 1000, "greeting": "hello"}

    # `docker run IMAGE serve` with that model at /opt/ml/model.
    container = docker_client.containers.run(
        built.tag, command=["serve"], name=f"shipyard-test-built-{uuid.uuid4().hex[:10]}",
        labels=scope_labels, detach=True, ports={"8080/tcp": ("127.0.0.1", None)},
        volumes={str(model_dir): {"bind": "/opt/ml/model", "mode": "ro"}},
        environment={"SAGEMAKER_MODEL_SERVER_WORKERS": "1"})
    try:
        port = wait_for_ping(container)
        status, body = http_request(port, "POST", "/invocations", b"[1, 2.5, 3]",
                                    {"Content-Type": "application/json"})
        assert status == 200, body
        assert json.loads(body) == {"predictions": [2.0, 5.0, 6.0], "uid": 1000}
        # The toolkit is PID 1 (exec form, no shell or init in front): SIGTERM reaches it.
        cmdline = container.exec_run(["cat", "/proc/1/cmdline"]).output.split(b"\0")
        assert [part.decode() for part in cmdline if part][-2:] == [
            "/opt/venv/bin/shipyard-entry", "serve"]
        started = time.monotonic()
        container.stop(timeout=30)
        assert time.monotonic() - started < 28
        assert container.wait(timeout=10)["StatusCode"] == 0
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_fragment_writing_to_opt_ml_fails_the_build(built: Built, tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", name="build-test-opt-ml",
                         fragment="RUN mkdir -p /opt/ml/model && touch /opt/ml/model/w.bin\n")
    result = invoke(built.settings, str(root), "--find-links", str(built.house), "--no-index",
                    "-q", *LABEL_ARGS)
    assert result.exit_code == 4, result.output
    assert "/opt/ml is reserved" in result.output


@pytest.mark.docker
def test_gpu_variant_builds_without_driver_and_refuses_to_train_without_gpu(
        built: Built, docker_client: Any, plane: ControlPlane, scope_labels: dict[str, str],
        tmp_path: Path) -> None:
    cuda = wheelhouse("nvidia-cuda-runtime-cu12")
    result = invoke(built.settings, str(built.root), "--gpu", "--find-links", str(built.house),
                    "--find-links", str(cuda), "--no-index", "--json",
                    *LABEL_ARGS)
    assert result.exit_code == 0, result.output
    tag = json.loads(result.stdout)["tag"]
    config = docker_client.images.get(tag).attrs["Config"]
    assert config["Labels"][RECIPE_LABEL] == "gpu"
    assert config["Entrypoint"] == ["shipyard-entry"] and config["User"] == "1000:1000"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and env["SHIPYARD_REQUIRE_GPU"] == "true"
    out = _run(docker_client, tag, scope_labels,
               "ldconfig -p | grep -c 'libcudart.so.12 ';",
               "find / -xdev -name 'libcuda.so*' -o -name 'libnvidia-ml.so*' | wc -l")
    assert out.split() == ["1", "0"]  # the CUDA runtime resolves; no driver in the image
    plane.create("training", _training_request("gpu-train", tag, tmp_path))
    record = plane.wait("training", "gpu-train", timeout=120)
    assert record["TrainingJobStatus"] == "Failed"
    assert record["FailureReason"].startswith("GpuUnavailable: this image was built with --gpu")
    assert "--gpus all" in record["FailureReason"]


# -- pushing to a real registry ----------------------------------------------------------------

REGISTRY_USER = "shipyard"
REGISTRY_PASSWORD = "correct-horse-battery"


@dataclass(frozen=True)
class Registry:
    host: str

    def digest(self, repository: str, tag: str) -> str | None:
        request = urllib.request.Request(
            f"http://{self.host}/v2/{repository}/manifests/{tag}", method="HEAD",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json",
                     "Authorization": "Basic " + base64.b64encode(
                         f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return str(response.headers["Docker-Content-Digest"])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Debian's docker-registry (distribution v2) with htpasswd auth, on a free loopback port."""
    binary, htpasswd = shutil.which("docker-registry"), shutil.which("htpasswd")
    if not binary or not htpasswd:
        message = "docker-registry and htpasswd are needed: run scripts/setup.sh --test"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("registry")
    subprocess.run([htpasswd, "-Bbc", str(root / "htpasswd"), REGISTRY_USER, REGISTRY_PASSWORD],
                   check=True, capture_output=True)
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:0\n"
        f"auth:\n  htpasswd:\n    realm: shipyard-test\n    path: {root / 'htpasswd'}\n")
    log_path = root / "registry.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        port = None
        while port is None:
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", log_path.read_text())
            if found:
                port = int(found.group(1))
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"docker-registry did not start:\n{log_path.read_text()}")
            else:
                time.sleep(0.05)
        yield Registry(host=f"127.0.0.1:{port}")
    finally:
        terminate(proc)


@pytest.mark.docker
def test_push_with_wrong_password_is_refused_before_upload(built: Built, registry: Registry,
                                                           docker_client: Any) -> None:
    ref = f"{registry.host}/team/model:wrong"
    try:
        result = invoke(built.settings, str(built.root), "--find-links", str(built.house),
                        "--no-index", "-q", "--tag", ref, "--push", "--registry-username",
                        REGISTRY_USER, "--registry-password-stdin", *LABEL_ARGS,
                        stdin="not-the-password\n")
        assert result.exit_code == 4, result.output
        assert (f"registry {registry.host} refused the credentials of user 'shipyard'"
                in result.output)
        assert registry.digest("team/model", "wrong") is None
        # No credentials at all: a clear "requires credentials", not a stack trace.
        result = invoke(built.settings, str(built.root), "--find-links", str(built.house),
                        "--no-index", "-q", "--tag", ref, "--push", *LABEL_ARGS,
                        env={"DOCKER_CONFIG": str(built.root / "no-docker-config")})
        assert result.exit_code == 4 and "requires credentials" in result.output, result.output
    finally:
        docker_client.images.remove(ref)


@pytest.mark.docker
def test_push_prints_and_records_the_digest_and_keeps_tags_immutable(
        built: Built, registry: Registry, docker_client: Any) -> None:
    ref = f"{registry.host}/team/model:v1"
    common = [str(built.root), "--find-links", str(built.house), "--no-index", "-q",
              "--tag", ref, "--push", *LABEL_ARGS]
    try:
        result = invoke(built.settings, *common, "--registry-username", REGISTRY_USER,
                        "--registry-password-stdin", stdin=REGISTRY_PASSWORD + "\n")
        assert result.exit_code == 0, result.output
        pushed_ref, _, digest = result.stdout.strip().splitlines()[-1].partition("@")
        assert pushed_ref == ref and re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
        assert registry.digest("team/model", "v1") == digest
        push = read_records(built.settings.data_dir)[-1]
        assert push["event"] == "push"
        assert (push["reference"], push["digest"], push["replaced"]) == (ref, digest, "")
        assert push["image_id"] == docker_client.images.get(ref).id

        # The tag exists: refused without --force, whoever the credentials come from.
        creds = {"SHIPYARD_REGISTRY_USERNAME": REGISTRY_USER,
                 "SHIPYARD_REGISTRY_PASSWORD": REGISTRY_PASSWORD}
        result = invoke(built.settings, *common, env=creds)
        assert result.exit_code == 4, result.output
        assert f"{ref} already exists in the registry (digest {digest})" in result.output
        assert "--force" in result.output
        assert read_records(built.settings.data_dir)[-1]["event"] == "build"

        result = invoke(built.settings, *common, "--force", "--json", env=creds)
        assert result.exit_code == 0, result.output
        forced = json.loads(result.stdout)["push"]
        assert forced["replaced"] == digest
        assert registry.digest("team/model", "v1") == forced["digest"]
    finally:
        docker_client.images.remove(ref)
