"""Containers without a container engine: each one is a supervised local process tree.

For machines with no Docker. The SageMaker contract is kept where a process can keep it: the
job sees its ``/opt/ml`` tree (``ContainerSpec.root_dir``) through ``SAGEMAKER_BASE_DIR`` and,
where the OS gives us a private mount namespace (root on Linux), at ``/opt/ml`` itself;
exit codes follow the engine's rule (``128 + signum`` for a signal death, SIGKILL = 137); stop
is SIGTERM to the main process, then SIGKILL to the whole tree. What a process cannot give
(network isolation and aliases, enforced memory/CPU limits, OOM detection) is documented in
``docs/runtimes.md`` and announced in the job's log.

Each container lives in ``<base_dir>/<name>/``: ``spec.json`` (the spec and its labels),
``plan.json`` (what to execute), and the supervisor's ``state.json``, ``log`` and ``exit``
(see :mod:`shipyard.runtimes._process_shim`). The supervisor is detached, so jobs outlive the
control plane; a new ``ProcessRuntime`` over the same ``base_dir`` reattaches from the files.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import shutil
import signal as signals
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from shipyard.contract.env import BASE_DIR, SAGEMAKER_PROGRAM, SAGEMAKER_SUBMIT_DIRECTORY
from shipyard.contract.labels import MANAGED_LABEL
from shipyard.errors import (
    ImageNotFound,
    ResourceInUse,
    ResourceNotFound,
    RuntimeUnavailable,
    ValidationError,
)
from shipyard.runtimes import _process_shim as shim
from shipyard.runtimes.base import (
    Capacity,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    LogLine,
    Runtime,
    host_capacity,
    wait_by_polling,
)

__all__ = ["IMAGE_PREFIX", "ProcessCommand", "ProcessRuntime", "resolve_command"]

#: ``process:<path>`` names a project folder or executable explicitly.
IMAGE_PREFIX = "process:"
CONTAINER_ROOT = PurePosixPath(shim.CONTAINER_ROOT)
#: Host variables a job inherits; everything else comes from the spec, as in a container.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
#: The toolkit entry points a project folder gets when it has no executable of that name.
TOOLKIT_COMMANDS = ("train", "serve")
#: The serving contract's port, and the variable a server reads to bind elsewhere.
SERVING_PORT = 8080
BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"

#: How the supervisor is started; ``-c`` rather than ``-m``, since this package has already
#: imported the module (``runpy`` would warn into the job's log).
_SHIM = (
    "-c",
    "import sys; from shipyard.runtimes._process_shim import main; sys.exit(main(sys.argv[1:]))",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_POLL_S = 0.05
_START_TIMEOUT_S = 30.0
_STARTING_GRACE_S = 30.0


@dataclass(frozen=True)
class ProcessCommand:
    """What a spec runs as: argv, its full environment and working directory."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    notices: list[str] = field(default_factory=list)


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _locate(image: str) -> Path | str:
    """A project folder, an executable file, or a command found on PATH."""
    target = image.removeprefix(IMAGE_PREFIX)
    path = Path(target)
    if path.is_absolute():
        if path.is_dir() or _is_executable(path):
            return path
    else:
        found = shutil.which(target)
        if found is not None and not image.startswith(IMAGE_PREFIX):
            return found
    raise ImageNotFound(
        f"image {image} is not runnable by the process runtime: give an absolute project "
        "folder or executable (optionally as process:<path>), or a command on PATH"
    )


def resolve_command(spec: ContainerSpec, root_dir: Path) -> ProcessCommand:
    """The argv, env and cwd for ``spec`` (see docs/runtimes.md, "Process runtime").

    ``argv = (spec.entrypoint or default) + (spec.command or [])``. For a project folder with no
    entry point the default is the folder's own executable named by ``command[0]`` (as ``train``
    on a container's PATH), else the Shipyard toolkit for ``train``/``serve`` with the folder as
    ``SAGEMAKER_SUBMIT_DIRECTORY`` and ``train.py`` as the default ``SAGEMAKER_PROGRAM``.
    """
    located = _locate(spec.image)
    env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    # `python` in a job is the interpreter the runtime runs on (it has the toolkit).
    path_dirs = [os.path.dirname(sys.executable), env.get("PATH", os.defpath)]
    command = list(spec.command or [])
    cwd = str(root_dir)
    if isinstance(located, Path) and located.is_dir():
        folder = located
        cwd = str(folder)
        path_dirs.insert(0, str(folder))
        if spec.entrypoint:
            argv = [*spec.entrypoint, *command]
        elif not command:
            raise ValidationError(
                f"nothing to run in {folder}: give a command (e.g. ['train']) or an entry point"
            )
        elif _is_executable(folder / command[0]):
            argv = [str(folder / command[0]), *command[1:]]
        elif command[0] in TOOLKIT_COMMANDS:
            argv = [sys.executable, "-m", f"shipyard.toolkit.{command[0]}", *command[1:]]
            env[SAGEMAKER_SUBMIT_DIRECTORY] = str(folder)
            if command[0] == "train" and (folder / "train.py").is_file():
                env[SAGEMAKER_PROGRAM] = "train.py"
        else:
            argv = command
    else:
        argv = [*(spec.entrypoint or [str(located)]), *command]
    env["PATH"] = os.pathsep.join(path_dirs)
    env[BASE_DIR] = str(root_dir)
    env.update(spec.env)
    notices = []
    if spec.memory_bytes or spec.cpus:
        notices.append("memory and CPU limits are not enforced by the process runtime")
    if spec.network == "none":
        # Only isolation asked for is worth a notice: the network every job and endpoint
        # gets of its own is documented as shared here (docs/runtimes.md).
        notices.append("network isolation is not enforced: processes share the host network")
    return ProcessCommand(argv=argv, env=env, cwd=cwd, notices=notices)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _probe_namespace() -> str | None:
    """Why a private mount namespace cannot be used here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "private mount namespaces need Linux"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "the unshare and mount commands are missing"
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp, "a"), Path(tmp, "b")
        source.mkdir()
        target.mkdir()
        try:
            probe = subprocess.run(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "mount",
                    "--bind",
                    str(source),
                    str(target),
                ],
                check=False,
                capture_output=True,
                timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unshare failed: {exc}"
        if probe.returncode != 0:
            return probe.stderr.decode(errors="replace").strip() or "unshare failed"
    try:
        # The bind needs a mount point; an empty directory on the host stands for it.
        os.makedirs(CONTAINER_ROOT, exist_ok=True)
    except OSError as exc:
        return f"cannot create {CONTAINER_ROOT}: {exc}"
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def _alive(pid: int, start: str | None) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return False
        # A zombie has exited; a different start time means the pid was reused.
        return fields[0] != "Z" and (start is None or fields[19] == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ProcessRuntime(Runtime):
    """Runs each container as a detached, supervised process tree under ``base_dir``."""

    kind = "process"

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)
        self._lock = threading.Lock()
        self._namespace_checked = False
        self._namespace_problem: str | None = None

    @property
    def private_mount_namespace(self) -> bool:
        """Whether jobs see their root at ``/opt/ml`` too (checked once, on first use)."""
        with self._lock:
            if not self._namespace_checked:
                self._namespace_problem = _probe_namespace()
                self._namespace_checked = True
        return self._namespace_problem is None

    def _dir(self, name: str) -> Path:
        if not _NAME_RE.match(name):
            raise ValidationError(f"invalid container name {name!r}")
        return self.base_dir / name

    def capacity(self) -> Capacity:
        """This machine's: the processes run on it, and see its GPUs."""
        return host_capacity()

    def check_image(self, image: str) -> None:
        _locate(image)

    def create_network(self, name: str, labels: dict[str, str], *,
                       internal: bool = False) -> None:
        """Nothing to create: processes share the host network (multi-host jobs unsupported)."""

    def remove_network(self, name: str) -> None:
        """Nothing to remove."""

    def start(self, spec: ContainerSpec) -> None:
        state_dir = self._dir(spec.name)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        try:
            state_dir.mkdir(mode=0o700)
        except FileExistsError as exc:
            raise ResourceInUse(f"container {spec.name} already exists") from exc
        try:
            self._launch(spec, state_dir)
        except BaseException:
            if not (state_dir / shim.STATE).exists() and not (state_dir / shim.EXIT).exists():
                shutil.rmtree(state_dir, ignore_errors=True)
            raise

    def _launch(self, spec: ContainerSpec, state_dir: Path) -> None:
        root = Path(spec.root_dir) if spec.root_dir else state_dir / "opt_ml"
        root.mkdir(parents=True, exist_ok=True)
        root = root.resolve()
        command = resolve_command(spec, root)
        read_only = _realise_mounts(spec, root)
        env = dict(command.env)
        ports = self._ports(spec, env)
        notices = list(command.notices)
        plan: dict[str, Any] = {"argv": command.argv, "env": env, "cwd": command.cwd}
        if self.private_mount_namespace:
            plan["namespace"] = {"root": str(root), "read_only": read_only}
            plan["command"] = command.argv
            plan["argv"] = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                sys.executable,
                *_SHIM,
                "--enter",
                str(state_dir),
            ]
        else:
            notices.append(
                f"no private mount namespace ({self._namespace_problem}): the contract root is "
                f"{root} (SAGEMAKER_BASE_DIR), not /opt/ml; read-only mounts are not enforced"
            )
        plan["notices"] = notices
        record = {
            **dataclasses.asdict(spec),
            "labels": {MANAGED_LABEL: "true", **spec.labels},
            "ports": ports,
            "created_at": time.time(),
        }
        shim.write_atomic(state_dir / "spec.json", record)
        shim.write_atomic(state_dir / shim.PLAN, plan)
        with open(state_dir / "supervisor.err", "wb") as err:
            subprocess.run(
                [sys.executable, *_SHIM, str(state_dir)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=state_dir,
                start_new_session=True,
                check=False,
                timeout=_START_TIMEOUT_S,
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not (state_dir / shim.STATE).exists() and not (state_dir / shim.EXIT).exists():
            if time.monotonic() > deadline:
                detail = (state_dir / "supervisor.err").read_text(errors="replace")[-2000:]
                raise RuntimeUnavailable(f"the supervisor of {spec.name} did not start: {detail}")
            time.sleep(0.005)

    def _ports(self, spec: ContainerSpec, env: dict[str, str]) -> dict[int, int]:
        # A process binds host ports itself: a port can only move if the server is told to,
        # through the serving contract's SAGEMAKER_BIND_TO_PORT.
        ports: dict[int, int] = {}
        for container_port, host_port in spec.ports.items():
            if container_port == SERVING_PORT and BIND_TO_PORT not in spec.env:
                chosen = host_port or _free_port()
                env[BIND_TO_PORT] = str(chosen)
                ports[container_port] = chosen
            else:
                ports[container_port] = container_port
        return ports

    def inspect(self, name: str) -> ContainerState | None:
        try:
            state_dir = self._dir(name)
        except ValidationError:
            return None
        record = _read_json(state_dir / "spec.json")
        if record is None:
            return None
        ended = _read_json(state_dir / shim.EXIT)
        state = _read_json(state_dir / shim.STATE) or {}
        started_at = state.get("started_at")
        if ended is None:
            if state and _alive(state["shim_pid"], state.get("shim_start")):
                ports = {int(k): int(v) for k, v in record.get("ports", {}).items()}
                return ContainerState(name, running=True, started_at=started_at, ports=ports)
            ended = _read_json(state_dir / shim.EXIT)
        if ended is None:
            if not state and time.time() - record["created_at"] < _STARTING_GRACE_S:
                return ContainerState(name, running=True)
            return ContainerState(
                name,
                running=False,
                started_at=started_at,
                error="the process supervisor is gone (host restart or killed): exit unknown",
            )
        return ContainerState(
            name,
            running=False,
            exit_code=int(ended["exit_code"]),
            started_at=started_at or ended["finished_at"],
            finished_at=ended["finished_at"],
            error=ended.get("error", ""),
        )

    def stats(self, name: str) -> ContainerStats | None:
        """From ``/proc``: CPU time (with reaped children's) and resident memory of the
        process and its descendants; the limit is the spec's memory, else the machine's.
        GPU: the machine's GPUs (``nvidia-smi``), only where one exists."""
        state = self.inspect(name)
        if state is None or not state.running:
            return None
        pid = (_read_json(self._dir(name) / shim.STATE) or {}).get("pid")
        usage = _tree_usage(int(pid)) if pid else None
        if usage is None:
            return None
        record = _read_json(self._dir(name) / "spec.json") or {}
        limit = int(record.get("memory_bytes") or host_capacity().memory_bytes)
        gpu = _gpu_usage()
        return ContainerStats(cpu_seconds=usage[0], memory_bytes=usage[1],
                              memory_limit_bytes=limit, gpu_percent=gpu and gpu[0],
                              gpu_memory_percent=gpu and gpu[1])

    def wait(self, name: str, timeout: float) -> ContainerState | None:
        return wait_by_polling(self, name, timeout, _POLL_S)

    def logs(self, name: str, since_ns: int = 0, follow: bool = False) -> Iterator[LogLine]:
        if self.inspect(name) is None:
            raise ResourceNotFound(f"no such container: {name}")
        state_dir = self._dir(name)
        position, buffer, final_pass = 0, b"", False
        while True:
            try:
                with open(state_dir / shim.LOG, "rb") as log:
                    log.seek(position)
                    data = log.read()
            except FileNotFoundError:
                data = b""
            position += len(data)
            *lines, buffer = (buffer + data).split(b"\n")
            for raw in lines:
                stamp, stream, text = raw.decode("utf-8", errors="replace").split(" ", 2)
                if int(stamp) > since_ns:
                    yield LogLine(timestamp_ns=int(stamp), text=text, stream=stream)
            if not follow or final_pass:
                return
            state = self.inspect(name)
            if state is None or not state.running:
                # The supervisor writes its last record before the exit file: one more read.
                final_pass = True
                continue
            time.sleep(_POLL_S)

    def signal(self, name: str, signum: int) -> None:
        """Deliver to the main process, as an engine does to PID 1; SIGKILL takes the tree."""
        try:
            state_dir = self._dir(name)
        except ValidationError:
            return
        state = _read_json(state_dir / shim.STATE)
        if state is None or (state_dir / shim.EXIT).exists():
            return
        if not _alive(state["pid"], state.get("pid_start")):
            return
        try:
            if signum == signals.SIGKILL:
                os.killpg(state["pid"], signum)
            else:
                os.kill(state["pid"], signum)
        except ProcessLookupError:
            pass

    def remove(self, name: str) -> None:
        try:
            state_dir = self._dir(name)
        except ValidationError:
            return
        if not state_dir.exists():
            return
        state = self.inspect(name)
        if state is not None and state.running:
            self.signal(name, signals.SIGKILL)
            self.wait(name, 10.0)
        shutil.rmtree(state_dir, ignore_errors=True)

    def list(self, labels: dict[str, str]) -> list[str]:
        if not self.base_dir.is_dir():
            return []
        names = []
        for entry in sorted(self.base_dir.iterdir()):
            record = _read_json(entry / "spec.json")
            if record is not None and labels.items() <= record.get("labels", {}).items():
                names.append(entry.name)
        return names


def _realise_mounts(spec: ContainerSpec, root: Path) -> list[str]:
    """Place each mount inside ``root`` (symlink ``root/<rel> -> source``); the real paths of
    read-only ones, which only a private mount namespace can enforce."""
    read_only = []
    for mount in spec.mounts:
        target = PurePosixPath(mount.target)
        try:
            relative = target.relative_to(CONTAINER_ROOT)
        except ValueError:
            raise ValidationError(
                f"the process runtime can only place mounts under {CONTAINER_ROOT}, "
                f"not {mount.target}"
            ) from None
        source = Path(mount.source)
        if not source.exists():
            raise ValidationError(f"mount source {source} does not exist")
        dest = root / relative
        if dest == root:
            raise ValidationError(f"mounting over the whole {CONTAINER_ROOT}: use root_dir")
        if os.path.realpath(dest) != os.path.realpath(source):
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink():
                dest.unlink()
            elif dest.is_dir() and not any(dest.iterdir()):
                dest.rmdir()
            elif dest.exists():
                raise ValidationError(f"cannot place mount {source} at {dest}: it exists")
            dest.symlink_to(source.resolve(), target_is_directory=source.is_dir())
        if mount.read_only:
            read_only.append(os.path.realpath(source))
    return read_only


def _tree_usage(root: int) -> tuple[float, int] | None:
    """CPU seconds (user and system, reaped children's included) and resident bytes of
    ``root`` and its descendants, from ``/proc/<pid>/stat``; None when ``root`` is gone."""
    stats: dict[int, list[str]] = {}
    children: dict[int, list[int]] = {}
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            text = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = text[text.rindex(")") + 2:].split()  # field n of proc(5) at n - 3
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    if root not in stats:
        return None
    ticks, todo, rss = 0, [root], 0
    while todo:
        pid = todo.pop()
        fields = stats[pid]
        ticks += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        rss += int(fields[21])
        todo.extend(children.get(pid, []))
    return ticks / os.sysconf("SC_CLK_TCK"), rss * os.sysconf("SC_PAGE_SIZE")


def _gpu_usage() -> tuple[float, float] | None:
    """The machine's GPUs' mean utilization and memory in use, percent; None without one."""
    if not glob.glob("/dev/nvidia[0-9]*") or shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used,memory.total",
             "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5,
            check=True).stdout
        rows = [[float(v) for v in line.split(",")] for line in out.splitlines() if line]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if not rows:
        return None
    return (sum(r[0] for r in rows) / len(rows),
            sum(100.0 * r[1] / r[2] for r in rows if r[2]) / len(rows))
