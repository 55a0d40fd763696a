"""Supervisor of one process-runtime "container": ``python -m shipyard.runtimes._process_shim DIR``.

It detaches (double fork, new session) so the job outlives the control plane that started it,
then runs the planned command in its own process group and records, in ``DIR``:

- ``state.json``: supervisor pid, main pid and its start time, written once the child runs;
- ``log``: one record per output line, ``"<epoch ns> <stdout|stderr> <text>"``, stamps strictly
  increasing so a reader can resume after the last stamp it saw without repeats;
- ``exit``: ``{"exit_code", "finished_at", "error"}``, written atomically; a signal death is
  ``128 + signum`` as a container engine reports it (SageMaker: SIGKILL = 137).

When the main process ends, the rest of its process group is killed, as a container's
processes die with its PID 1. ``--enter DIR`` is the first step inside a private mount
namespace: bind the contract root onto ``/opt/ml``, then exec the command.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

PLAN = "plan.json"
STATE = "state.json"
LOG = "log"
EXIT = "exit"
CONTAINER_ROOT = "/opt/ml"


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def proc_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against pid reuse); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class _Log:
    def __init__(self, path: Path) -> None:
        self._file: IO[bytes] = open(path, "ab", buffering=0)  # noqa: SIM115 - lives with the shim
        self._last = 0

    def write(self, stream: str, text: bytes) -> None:
        now = max(time.time_ns(), self._last + 1)
        self._last = now
        line = text.decode("utf-8", errors="replace").replace("\n", " ")
        # One write per record, so a tailing reader never sees a record cut by another.
        self._file.write(f"{now} {stream} {line}\n".encode())

    def close(self) -> None:
        self._file.close()


def _pump(proc: subprocess.Popen[bytes], log: _Log) -> None:
    selector = selectors.DefaultSelector()
    partial: dict[str, bytes] = {}
    assert proc.stdout is not None and proc.stderr is not None
    for stream, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        selector.register(pipe, selectors.EVENT_READ, stream)
        partial[stream] = b""
    while selector.get_map():
        for key, _ in selector.select():
            stream = key.data
            chunk = os.read(key.fd, 65536)
            if not chunk:
                selector.unregister(key.fileobj)
                if partial[stream]:
                    log.write(stream, partial[stream])
                continue
            *lines, partial[stream] = (partial[stream] + chunk).split(b"\n")
            for line in lines:
                log.write(stream, line.rstrip(b"\r"))


def supervise(state_dir: Path) -> int:
    plan = json.loads((state_dir / PLAN).read_text())
    log = _Log(state_dir / LOG)
    for notice in plan.get("notices", []):
        log.write("stderr", f"shipyard: {notice}".encode())
    error = ""
    try:
        proc = subprocess.Popen(
            plan["argv"],
            cwd=plan["cwd"],
            # In a namespace the helper runs first (with ours) and execs with the job's env.
            env=None if plan.get("namespace") else plan["env"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        # What an engine reports when the entry point cannot be executed.
        error = f"cannot execute {plan['argv'][0]}: {exc.strerror or exc}"
        log.write("stderr", error.encode())
        code = 126 if isinstance(exc, PermissionError) else 127
        write_atomic(
            state_dir / EXIT, {"exit_code": code, "finished_at": time.time(), "error": error}
        )
        log.close()
        return 0
    write_atomic(
        state_dir / STATE,
        {
            "shim_pid": os.getpid(),
            "shim_start": proc_start_time(os.getpid()),
            "pid": proc.pid,
            "pid_start": proc_start_time(proc.pid),
            "started_at": time.time(),
        },
    )
    _pump(proc, log)
    returncode = proc.wait()
    with_group_killed(proc.pid)
    code = 128 - returncode if returncode < 0 else returncode
    log.close()
    write_atomic(state_dir / EXIT, {"exit_code": code, "finished_at": time.time(), "error": error})
    return 0


def with_group_killed(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def enter(state_dir: Path) -> None:
    """Inside the private mount namespace: make ``/opt/ml`` the contract root, then exec."""
    plan = json.loads((state_dir / PLAN).read_text())
    ns = plan["namespace"]
    try:
        subprocess.run(
            ["mount", "--bind", ns["root"], CONTAINER_ROOT],
            check=True,
            capture_output=True,
        )
        for path in ns.get("read_only", []):
            # Binding a path onto itself, then remounting read-only, affects this namespace only.
            for args in (["--bind", path, path], ["-o", "remount,bind,ro", path]):
                subprocess.run(["mount", *args], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or str(exc).encode()
        if isinstance(detail, str):
            detail = detail.encode()
        sys.stderr.write(
            "shipyard: could not bind the contract root onto /opt/ml; running without it: "
            f"{detail.decode(errors='replace').strip()}\n"
        )
        sys.stderr.flush()
    os.chdir(plan["cwd"])
    try:
        os.execvpe(plan["command"][0], plan["command"], plan["env"])
    except OSError as exc:
        sys.stderr.write(f"cannot execute {plan['command'][0]}: {exc.strerror or exc}\n")
        sys.stderr.flush()
        os._exit(126 if isinstance(exc, PermissionError) else 127)


def _detach() -> None:
    # Double fork: the caller reaps the first child at once; the supervisor is adopted by init.
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--enter":
        enter(Path(argv[1]))
        return 127
    if len(argv) != 1:
        sys.stderr.write("usage: python -m shipyard.runtimes._process_shim STATE_DIR\n")
        return 2
    _detach()
    return supervise(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
